"""Listing input images for the demo and analysis tools."""
import os
import os.path as osp
from typing import List

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(path: str, limit: int = 0) -> List[str]:
    """``path`` itself if it is a file, else the sorted images in the folder (at most ``limit`` when > 0)."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'no such image file or folder: {path}')
    images = sorted(osp.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {path}')
    return images[:limit] if limit > 0 else images
