"""The PNGs: consecutive-layer similarity and LA vs VA (LaViT), attention density with CB on and off (CB-ViT)."""
from typing import List

import numpy as np

PLOT_DPI = 80


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _pick(rows: List[dict], **match) -> List[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def plot_similarity(path: str, rows: List[dict], info: dict, title: str) -> None:
    plt = _plt()
    depths = info['depths']
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.6), squeeze=False,
                             gridspec_kw=dict(width_ratios=[max(d - 1, 1) for d in depths]))
    colours = {'VA->VA': '#1f77b4', 'VA->LA': '#ff7f0e', 'LA->LA': '#d62728'}
    for row_i, (metric, label) in enumerate((('cos_consecutive', 'row cosine'),
                                             ('ccos_consecutive', 'centred row cosine'))):
        for s in range(4):
            ax = axes[row_i][s]
            pairs = sorted(_pick(rows, variant='lavit', stage=s, metric=metric), key=lambda r: r['layer'])
            base = {r['layer']: r for r in _pick(rows, variant='all-va', stage=s, metric=metric)}
            x = np.arange(len(pairs))
            if not pairs:
                ax.text(0.5, 0.5, 'one layer:\nno pair', ha='center', va='center', transform=ax.transAxes)
                ax.set_xticks([])
            for j, r in enumerate(pairs):
                ax.bar(j - 0.2, r['value'], 0.4, yerr=r['std'], color=colours.get(r['kind'], 'grey'),
                       capsize=2, label=r['kind'])
                b = base.get(r['layer'])
                if b is not None:
                    ax.bar(j + 0.2, b['value'], 0.4, yerr=b['std'], color='#9e9e9e', hatch='//',
                           edgecolor='white', capsize=2, label='all-VA (VA->VA)')
                if metric == 'cos_consecutive':
                    for off, variant in ((-0.2, 'lavit'), (0.2, 'all-va')):
                        u = _pick(rows, variant=variant, stage=s, layer=r['layer'], metric='cos_to_uniform')
                        if u:
                            ax.plot(j + off, u[0]['value'], 'k_', markersize=12, markeredgewidth=2,
                                    label='row cosine to uniform')
            if pairs:
                ax.set_xticks(x)
                ax.set_xticklabels([f'{r["layer"] - 1}->{r["layer"]}\n{r["kind"]}' for r in pairs], fontsize=8)
            lows = [r['value'] - r['std'] for r in [*pairs, *base.values()]]
            ax.set_ylim(0 if metric == 'cos_consecutive' else min([0.0, *lows]) - 0.05, 1.05)
            ax.axhline(1.0, color='k', lw=0.5, ls=':')
            if row_i == 0:
                ax.set_title(f'stage {s + 1}')
            if s == 0:
                ax.set_ylabel(label)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, [f'LaViT {lab}' if '->' in lab and 'all-VA' not in lab else lab for lab in labels],
               loc='lower center', ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f'Attention similarity of consecutive layers: {title}', fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def plot_la_vs_va(path: str, rows: List[dict], info: dict, title: str) -> None:
    plt = _plt()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw=dict(width_ratios=[1, 0.9, 1.2]))
    la = sorted(_pick(rows, variant='lavit', metric='cos_to_last_va'), key=lambda r: (r['stage'], r['layer']))
    labels = [f's{r["stage"] + 1}.L{r["layer"]}' for r in la]
    x = np.arange(len(la))

    def values(variant, metric):
        out = []
        for r in la:
            m = _pick(rows, variant=variant, stage=r['stage'], layer=r['layer'], metric=metric)
            out.append((m[0]['value'], m[0]['std']) if m else (np.nan, 0.0))
        return np.array(out).reshape(-1, 2)

    w = 0.2
    for k, (variant, metric, colour, hatch, name) in enumerate((
            ('lavit', 'cos_to_last_va', '#ff7f0e', None, 'LaViT LA layer: cosine'),
            ('all-va', 'cos_to_last_va', '#9e9e9e', None, 'all-VA, same position: cosine'),
            ('lavit', 'ccos_to_last_va', '#ff7f0e', '//', 'LaViT LA layer: centred cosine'),
            ('all-va', 'ccos_to_last_va', '#9e9e9e', '//', 'all-VA, same position: centred cosine'))):
        v = values(variant, metric)
        ax1.bar(x + (k - 1.5) * w, v[:, 0], w, yerr=v[:, 1], capsize=1.5, color=colour, hatch=hatch,
                edgecolor='white', label=name)
    ax1.set_ylim(min(0.0, float(np.nanmin(values('all-va', 'ccos_to_last_va')[:, 0])) - 0.05), 1.05)
    ax1.axhline(0, color='k', lw=0.5)
    ax1.set_title("row similarity to the stage's last VA layer (sS.Ll: stage S, layer l)", fontsize=9)
    ax1.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    for k, (variant, colour, name) in enumerate((('lavit', '#ff7f0e', 'LaViT LA layer'),
                                                 ('all-va', '#9e9e9e', 'all-VA, same position'))):
        v = values(variant, 'tv_to_last_va')
        ax2.bar(x + (k - 0.5) * 0.4, v[:, 0], 0.4, yerr=v[:, 1], capsize=1.5, color=colour, label=name)
    tops = [float(np.nanmax(values(v, 'tv_to_last_va').sum(axis=1))) for v in ('lavit', 'all-va')]
    ax2.set_ylim(0, max(0.05, *tops) * 1.1)
    ax2.set_title("total variation to the stage's last VA layer (0..1)", fontsize=9)
    ax2.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=1, frameon=False)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7, rotation=90)

    layers = sorted(_pick(rows, variant='lavit', metric='pooled_diag_mean'), key=lambda r: (r['stage'], r['layer']))
    x3 = np.arange(len(layers))
    off = [(_pick(rows, variant='lavit', stage=r['stage'], layer=r['layer'], metric='pooled_offdiag_max')
            or [dict(value=np.nan)])[0]['value'] for r in layers]
    colours = ['#ff7f0e' if r['kind'] == 'LA' else '#1f77b4' for r in layers]
    ax3.bar(x3 - 0.2, [r['value'] for r in layers], 0.4, color=colours, label='diagonal, mean (VA blue, LA orange)')
    ax3.bar(x3 + 0.2, off, 0.4, color='#bdbdbd', label='largest off-diagonal, mean')
    k = info['key_grid'][0] * info['key_grid'][1]
    ax3.axhline(1.0 / k, color='k', ls='--', lw=0.8, label=f'uniform 1/K (K={k})')
    ax3.set_xticks(x3)
    ax3.set_xticklabels([f's{r["stage"] + 1}.L{r["layer"]} {r["kind"]}' for r in layers], fontsize=7, rotation=90)
    ax3.set_title('LaViT attention pooled onto the key grid: self-affinity', fontsize=9)
    ax3.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    fig.suptitle(f'Less attention vs vanilla attention: {title}', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=PLOT_DPI, bbox_inches='tight')
    plt.close(fig)


def plot_cbvit(path: str, rows: List[dict], info: dict, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (metric, label) in zip(axes, (('entropy_norm', 'normalised row entropy (1 = uniform)'),
                                          ('max_prob', 'mean row maximum'),
                                          ('ccos_consecutive', 'centred cosine, layer l-1 vs l'))):
        for variant, colour, marker in (('cb-on', '#2ca02c', 'o'), ('cb-off', '#7f7f7f', 's')):
            rs = sorted(_pick(rows, variant=variant, metric=metric), key=lambda r: r['layer'])
            ax.errorbar([r['layer'] for r in rs], [r['value'] for r in rs], yerr=[r['std'] for r in rs],
                        color=colour, marker=marker, ms=4, capsize=2, label=variant)
        if metric == 'max_prob':
            ax.axhline(1.0 / info['tokens'], color='k', ls='--', lw=0.8, label=f'uniform 1/N (N={info["tokens"]})')
        ax.set_xlabel('block')
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].axhline(1.0, color='k', ls=':', lw=0.8)
    fig.suptitle(f'CB-ViT attention density, same weights with CB on/off: {title}', fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
