"""The tidy CSV (one row per model / variant / stage / layer / metric) and the text summaries printed to stdout."""
import csv
from collections import defaultdict
from typing import List, Tuple

import numpy as np

from .row_stats import Meter

CSV_NAME = 'attention_stats.csv'
CSV_COLUMNS = ('model', 'variant', 'weights', 'image_size', 'n_images', 'stage', 'layer', 'ref_layer', 'kind',
               'metric', 'value', 'std')


def write_csv(path: str, rows: List[dict], model_name: str, weights: str, size: Tuple[int, int]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(model=model_name, variant=r['variant'], weights=weights,
                                 image_size=f'{size[0]}x{size[1]}', n_images=r['n'], stage=r['stage'] + 1,
                                 layer=r['layer'], ref_layer=r['ref_layer'], kind=r['kind'], metric=r['metric'],
                                 value=f'{r["value"]:.6g}', std=f'{r["std"]:.6g}'))


def summary_lavit(meter: Meter, info: dict) -> str:
    lines = ['(a) consecutive-layer attention similarity, row cosine [centred]',
             f'{"stage":>5} {"pair":>5} {"kind":>7}   {"LaViT":>16}   {"all-VA":>16}   {"all-VA cos->uniform":>19}']
    for (variant, s, l, ref, kind, metric), _ in meter.values.items():
        if variant != 'lavit' or metric != 'cos_consecutive':
            continue
        a = f'{meter.get("lavit", s, l, "cos_consecutive"):.3f} [{meter.get("lavit", s, l, "ccos_consecutive"):.3f}]'
        b = f'{meter.get("all-va", s, l, "cos_consecutive"):.3f} [{meter.get("all-va", s, l, "ccos_consecutive"):.3f}]'
        lines.append(f'{s + 1:>5} {f"{l - 1}-{l}":>5} {kind:>7}   {a:>16}   {b:>16}   '
                     f'{meter.get("all-va", s, l, "cos_to_uniform"):>19.3f}')
    by_kind = defaultdict(list)
    for (variant, s, l, ref, kind, metric), vals in meter.values.items():
        if metric == 'cos_consecutive':
            by_kind[(variant, kind)].append(np.mean(vals))
    lines.append('    mean by pair kind: ' + ', '.join(f'{v} {k} {np.mean(x):.3f}' for (v, k), x in by_kind.items()))
    lines += ['', '(b) LA layer vs last VA layer of its stage; self-affinity pooled onto the key grid '
              f'(uniform 1/K = {1 / (info["key_grid"][0] * info["key_grid"][1]):.3f})',
              f'{"stage":>5} {"layer":>5} {"ref":>3}  {"cos":>6} {"ccos":>6} {"TV":>6} | {"allVA cos":>9} {"ccos":>6} '
              f'{"TV":>6} | '
              f'{"diag":>6} {"offmax":>6} {"dom.frac":>8} {"entropy":>7}']
    for (variant, s, l, ref, kind, metric), _ in meter.values.items():
        if variant != 'lavit' or metric != 'cos_to_last_va':
            continue
        g = lambda v, m: meter.get(v, s, l, m)  # noqa: E731
        lines.append(f'{s + 1:>5} {l:>5} {ref:>3}  {g("lavit", "cos_to_last_va"):>6.3f} '
                     f'{g("lavit", "ccos_to_last_va"):>6.3f} {g("lavit", "tv_to_last_va"):>6.3f} | '
                     f'{g("all-va", "cos_to_last_va"):>9.3f} {g("all-va", "ccos_to_last_va"):>6.3f} '
                     f'{g("all-va", "tv_to_last_va"):>6.3f} | {g("lavit", "pooled_diag_mean"):>6.3f} '
                     f'{g("lavit", "pooled_offdiag_max"):>6.3f} {g("lavit", "pooled_diag_dominant_frac"):>8.3f} '
                     f'{g("lavit", "entropy_norm"):>7.3f}')
    lines += ['', 'per-layer density (normalised entropy) LaViT / all-VA:']
    for s in range(4):
        cells = []
        for l in range(info['depths'][s]):
            kind = 'LA' if l >= info['num_vanilla'][s] else 'VA'
            cells.append(f'L{l}{kind} {meter.get("lavit", s, l, "entropy_norm"):.3f}/'
                         f'{meter.get("all-va", s, l, "entropy_norm"):.3f}')
        lines.append(f'  stage {s + 1}: ' + '  '.join(cells))
    return '\n'.join(lines)


def summary_cbvit(meter: Meter, info: dict) -> str:
    lines = [f'(c) CB-ViT attention density, same weights, CB on vs off ({info["cb_note"]}; N = {info["tokens"]} '
             'tokens)',
             f'{"block":>5}  {"entropy on":>10} {"entropy off":>11}  {"max on":>7} {"max off":>7}']
    for l in range(info['depth']):
        g = lambda v, m: meter.get(v, 0, l, m)  # noqa: E731
        lines.append(f'{l:>5}  {g("cb-on", "entropy_norm"):>10.4f} {g("cb-off", "entropy_norm"):>11.4f}  '
                     f'{g("cb-on", "max_prob"):>7.4f} {g("cb-off", "max_prob"):>7.4f}')
    for metric in ('entropy_norm', 'max_prob'):
        on = np.mean([meter.get('cb-on', 0, l, metric) for l in range(info['depth'])])
        off = np.mean([meter.get('cb-off', 0, l, metric) for l in range(info['depth'])])
        lines.append(f'  mean {metric}: CB on {on:.4f}, CB off {off:.4f}')
    return '\n'.join(lines)
