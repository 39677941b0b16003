"""Building from mmdet's and mmseg's registries via config dicts; importing with one toolbox only."""
import subprocess
import sys
import textwrap

import pytest
import torch


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg'])
def test_build_both_backbones_from_toolbox_registry(toolbox):
    registry = __import__(f'{toolbox}.registry', fromlist=['MODELS']).MODELS
    lavit = registry.build(dict(type='LaViT', arch='t', out_indices=(0, 1, 2, 3)))
    cbvit = registry.build(dict(type='CBViT', arch='deit-t'))
    loss = registry.build(dict(type='DiagonalityPreservingLoss', loss_weight=0.1))
    assert type(lavit).__name__ == 'LaViT' and type(cbvit).__name__ == 'CBViT' and loss.loss_weight == 0.1
    with torch.no_grad():
        assert len(lavit.eval()(torch.randn(1, 3, 64, 64))) == 4


@pytest.mark.parametrize('missing', ['mmdet', 'mmseg'])
def test_import_with_one_toolbox_only(missing):
    """Hides one toolbox from the import system; the package still imports and registers in the other."""
    present = 'mmseg' if missing == 'mmdet' else 'mmdet'
    code = textwrap.dedent(f'''
        import sys
        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name == '{missing}' or name.startswith('{missing}.'):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        import vitattn_mm
        from {present}.registry import MODELS
        assert MODELS.get('LaViT') is vitattn_mm.LaViT and MODELS.get('CBViT') is vitattn_mm.CBViT
        assert '{missing}' not in sys.modules
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith('ok')
