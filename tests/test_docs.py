"""The README and docs/*.md work as written.

For every fenced block of README.md and docs/*.md:

* every config path it names (``configs/...py``, with ``{a,b}`` and ``*`` expanded) exists, and builds: mmengine's
  ``Config.fromfile`` and the toolbox's ``MODELS.build`` (no weights are loaded);
* every command that runs one of our tools (``tools/*.py``, ``tools/**/*.py``, ``tools/*.sh``) or mmdet's/mmseg's own
  ``tools/*.py`` (``mmdetection/tools/...``, ``mmsegmentation/tools/...``; checked against the copies pip installs
  under ``mmdet/.mim`` and ``mmseg/.mim``) passes only options that the tool's ``--help`` lists, and parses with the
  tool's own argument parser; ``--cfg-options`` are applied to the named config as our tools apply them;
* every ``python`` block runs: a block that is a config (it has ``_base_`` or a top-level ``model =``) is written to
  a copy of ``configs/`` (at the path given by ``<!-- docs-test: config configs/DIR/NAME.py -->`` before the block,
  default ``configs/docs_snippets/``), built, and trained for one step on two small random images (with the
  auxiliary-loss hook, whose ``loss_dp`` must reach the losses when the backbone has a DP loss); other python blocks
  are executed.

Markers (an HTML comment on the line before a block):

* ``<!-- docs-test: not-run (why) -->``: a block that cannot run here (COCO or ADE20K, GPUs, downloads). A python
  block so marked is not executed; any marked block must still name at least one config, and its configs must
  exist and build. Bash blocks are never executed anyway (they train for hours): their configs and options are
  checked, and the marker tells the reader that the block needs what it says.
* ``<!-- docs-test: config configs/DIR/NAME.py -->``: the python block is a config file at that (new) path, so its
  relative ``_base_`` resolves.
* ``<!-- docs-test: same-as configs/DIR/NAME.py -->``: the python block shows that file; their code lines (comments
  aside) must be equal.

Also checked: relative links of the docs point at files that exist. The docs' tables of figures (model zoo,
benchmarks, learning thresholds) are checked against their sources in tests/test_docs_figures.py; what the docs
promise about checkpoints and resuming is tested in tests/test_checkpoints_and_resume.py.

On a failure the message names the doc, the line of the block and what to fix.
"""
import argparse
import contextlib
import functools
import glob
import importlib.util
import inspect
import io
import os
import os.path as osp
import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Optional
from unittest import mock

import pytest
import torch
from helpers import ROOT, read_doc as read, registry_of

DOCS = ['README.md'] + sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
MARKER = re.compile(r'<!--\s*docs-test:\s*(.*?)\s*-->')
FENCE = re.compile(r'^\s*(`{3,}|~{3,})\s*([\w+-]*)')
CONFIG_PATH = re.compile(r'(?<![\w.-])(configs/[\w./{},*-]*?\.py)(?![\w])')
OUR_TOOL = re.compile(r'^(?:\./)?(tools/[\w./-]+\.(?:py|sh))$')
THEIR_TOOL = re.compile(r'(?:^|/)(mmdetection|mmsegmentation)/(tools/[\w./-]+\.py)$')
INSTALLED_TOOLBOX = {'mmdetection': 'mmdet', 'mmsegmentation': 'mmseg'}
SEPARATORS = {'|', '||', '&&', ';', '&'}
# Our shell wrappers: number of positional arguments, the python tool the remaining options go to, and how the
# wrapper calls it. The test checks the wrapper still passes "${@:N+1}" on to that tool.
SHELL_WRAPPERS = {
    'tools/dist_train.sh': (2, 'tools/train.py', lambda pos, rest: [pos[0], *rest, '--launcher', 'pytorch']),
    'tools/dist_test.sh': (3, 'tools/test.py', lambda pos, rest: [pos[0], pos[1], *rest, '--launcher', 'pytorch']),
    'tools/slurm_train.sh': (4, 'tools/train.py',
                             lambda pos, rest: [pos[2], f'--work-dir={pos[3]}', *rest, '--launcher=slurm']),
}
NO_OPTIONS = {'tools/main_job.sh', 'tools/setup_env.sh'}  # configured by environment variables only
PASS_THROUGH = {'tools/run_tests.sh'}  # options go to pytest


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: Optional[str]

    @property
    def where(self) -> str:
        return f'{self.doc}:{self.line}'

    @property
    def not_run(self) -> bool:
        return bool(self.marker and self.marker.startswith('not-run'))




def parse_blocks(doc: str) -> List[Block]:
    lines = read(doc).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = MARKER.search(lines[j]) if j >= 0 else None
        blocks.append(Block(doc, start + 1, lang, textwrap.dedent('\n'.join(body)), marker and marker.group(1)))
        i += 1
    return blocks


ALL_BLOCKS = [b for doc in DOCS for b in parse_blocks(doc)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ('bash', 'sh', 'shell')]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ('python', 'py')]


def expand_braces(text: str) -> List[str]:
    m = re.search(r'\{([^{}]*)\}', text)
    if not m:
        return [text]
    return [x for alt in m.group(1).split(',') for x in expand_braces(text[:m.start()] + alt + text[m.end():])]


def named_configs(text: str) -> Dict[str, List[str]]:
    """Config paths named in ``text``: {as written: [existing files it stands for]} (empty list: none exists)."""
    found = {}
    for written in CONFIG_PATH.findall(text):
        files = []
        for pattern in expand_braces(written):
            files += sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, pattern)))
        found[written] = files
    return found


# ------------------------------------------------------------------------------------------------ config paths

@pytest.mark.parametrize('doc', DOCS)
def test_named_config_paths_exist(doc):
    """Every config path named anywhere in the doc (prose, tables, blocks) exists."""
    text = re.sub(r'<!--\s*docs-test:\s*config\s.*?-->', '', read(doc))  # where snippets are written: new files
    missing = [w for w, files in named_configs(text).items() if not files]
    assert not missing, f'{doc} names config paths that do not exist (rename them in the doc): {missing}'


def _block_configs():
    configs = {}
    for block in ALL_BLOCKS:
        for files in named_configs(block.text + '\n' + (block.marker or '')).values():
            for f in files:
                if not f.startswith('configs/_base_/'):
                    configs.setdefault(f, []).append(block.where)
    return configs


BLOCK_CONFIGS = _block_configs()


@functools.lru_cache(maxsize=None)
def build_config(path: str):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    return registry_of(cfg.default_scope).build(cfg.model), cfg


@pytest.mark.parametrize('config', sorted(BLOCK_CONFIGS))
def test_named_config_builds(config):
    """Each config named in a fenced block parses and its model builds (no weights loaded)."""
    try:
        model, _ = build_config(osp.join(ROOT, config))
    except Exception as e:  # noqa: BLE001  (reported with the places that name it)
        raise AssertionError(f'{config}, named at {BLOCK_CONFIGS[config]}, does not build: {type(e).__name__}: {e}')
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize('block', [b for b in ALL_BLOCKS if b.not_run], ids=lambda b: b.where)
def test_not_run_blocks_name_an_existing_config(block):
    configs = named_configs(block.text)
    assert configs, (f'{block.where} is marked not-run but names no config; a block that names none must run here '
                     f'(remove the marker) or name the config it is about')
    assert all(configs.values()), f'{block.where} names configs that do not exist: {configs}'


# ------------------------------------------------------------------------------------------------- tool options

class _Captured(Exception):
    pass


def load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def tool_parser(path: str) -> argparse.ArgumentParser:
    """The argparse parser of a tool script, taken from its ``parse_args`` (or ``main``) without running it."""
    module = load_module(path, 'docs_tool_' + re.sub(r'\W', '_', osp.relpath(path, ROOT)))
    entry = getattr(module, 'parse_args', None) or getattr(module, 'main')
    box = []

    def grab(self, *args, **kwargs):
        box.append(self)
        raise _Captured

    with mock.patch.object(argparse.ArgumentParser, 'parse_known_args', grab), contextlib.suppress(_Captured):
        entry([]) if inspect.signature(entry).parameters else entry()
    assert box, f'{path}: no argparse parser found in parse_args/main'
    return box[0]


def parse_with(parser: argparse.ArgumentParser, args: List[str]):
    """``parser.parse_args(args)``; argparse's error message as an AssertionError instead of an exit."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(args)
    except SystemExit:
        raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None


def shell_commands(text: str):
    """Simple commands of a shell block as token lists (continuations joined, comments dropped)."""
    for line in re.sub(r'\\\n', ' ', text).splitlines():
        tokens = shlex.split(line, comments=True)
        command = []
        for token in tokens + [';']:
            if token in SEPARATORS or token.startswith(('>', '2>', '<')):
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def check_command(command: List[str]) -> Optional[str]:
    """Checks one command against the tool it runs; returns the tool (None when it runs none of ours/theirs)."""
    for i, token in enumerate(command):
        ours, theirs = OUR_TOOL.match(token), THEIR_TOOL.search(token)
        if ours or theirs:
            break
    else:
        return None
    args = command[i + 1:]
    if theirs:
        package = importlib.import_module(INSTALLED_TOOLBOX[theirs.group(1)])
        tool = osp.join(osp.dirname(package.__file__), '.mim', theirs.group(2))
        assert osp.isfile(tool), f'{token}: no {theirs.group(2)} in the installed {package.__name__} ({tool})'
        check_options(tool, args, token)
        return token
    tool = ours.group(1)
    assert osp.isfile(osp.join(ROOT, tool)), f'{tool} does not exist'
    if tool in NO_OPTIONS:
        assert not args, f'{tool} takes no arguments (only environment variables), got {args}'
    elif tool in SHELL_WRAPPERS:
        npos, target, call = SHELL_WRAPPERS[tool]
        script = read(tool)
        assert f'"${{@:{npos + 1}}}"' in script and target in script, (
            f'{tool} no longer passes "${{@:{npos + 1}}}" to {target}: update SHELL_WRAPPERS in tests/test_docs.py')
        assert len(args) >= npos and not any(a.startswith('-') for a in args[:npos]), (
            f'{tool} needs {npos} positional arguments before any option, got {args}')
        check_options(osp.join(ROOT, target), call(args[:npos], args[npos:]), tool)
    elif tool.endswith('.py'):
        check_options(osp.join(ROOT, tool), args, tool)
    elif tool not in PASS_THROUGH:
        raise AssertionError(f'{tool}: unknown shell tool; add it to SHELL_WRAPPERS/NO_OPTIONS in tests/test_docs.py')
    return tool


def check_options(tool_path: str, args: List[str], shown: str) -> None:
    from vitattn_mm.utils.run import load_config
    parser = tool_parser(tool_path)
    help_text = parser.format_help()
    for arg in args:
        if arg.startswith('--'):
            option = arg.split('=', 1)[0]
            assert option in parser._option_string_actions and option in help_text, (
                f'{shown}: option {option} is not in its --help')
    parsed = parse_with(parser, args)
    config, options = getattr(parsed, 'config', None), getattr(parsed, 'cfg_options', None)
    if options and config and osp.isfile(osp.join(ROOT, config)):
        load_config(osp.join(ROOT, config), options)  # as tools/train.py and tools/test.py apply them


@pytest.mark.parametrize('block', SHELL_BLOCKS, ids=lambda b: b.where)
def test_shell_block_commands(block):
    try:
        commands = list(shell_commands(block.text))
    except ValueError as e:  # shlex: unbalanced quotes
        raise AssertionError(f'{block.where}: not valid shell: {e}') from None
    for command in commands:
        try:
            check_command(command)
        except AssertionError as e:
            raise AssertionError(f'{block.where}: `{shlex.join(command)}`: {e}') from None
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f'{block.where}: `{shlex.join(command)}`: {type(e).__name__}: {e}') from None


def test_shell_blocks_run_our_tools():
    """The command parser still finds the documented commands (a guard against this test checking nothing)."""
    tools = {check_command(c) for b in SHELL_BLOCKS for c in shell_commands(b.text)}
    assert {'tools/train.py', 'tools/test.py', 'tools/dist_train.sh'} <= tools, tools


# ------------------------------------------------------------------------------------------------ python blocks

def is_config(text: str) -> bool:
    return bool(re.search(r'^(_base_|model)\s*=', text, re.M))


@pytest.fixture(scope='module')
def configs_copy(tmp_path_factory):
    """A copy of configs/ (links to every file) in which snippets can be written next to our configs."""
    root = tmp_path_factory.mktemp('docs_configs') / 'configs'
    root.mkdir()
    for entry in sorted(os.listdir(osp.join(ROOT, 'configs'))):
        src = osp.join(ROOT, 'configs', entry)
        if entry == '_base_' or not osp.isdir(src):
            os.symlink(src, root / entry)
            continue
        (root / entry).mkdir(parents=True)
        for name in os.listdir(src):
            os.symlink(osp.join(src, name), root / entry / name)
    return root


def snippet_path(block: Block, root) -> str:
    if block.marker and block.marker.startswith('config '):
        rel = block.marker.split(None, 1)[1]
        assert rel.startswith('configs/') and rel.endswith('.py'), f'{block.where}: bad marker {block.marker!r}'
        rel = rel[len('configs/'):]
    else:  # next to the config a relative _base_ names (when one directory has it), else in a directory of its own
        name = f'{osp.splitext(osp.basename(block.doc))[0]}_L{block.line}.py'
        bases = re.findall(r'[\'"]\./([\w.-]+\.py)[\'"]', block.text)
        dirs = {osp.basename(osp.dirname(p)) for b in bases for p in glob.glob(osp.join(ROOT, 'configs', '*', b))}
        rel = f'{dirs.pop()}/{name}' if len(dirs) == 1 else f'docs_snippets/{name}'
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    assert not path.exists(), f'{block.where}: {rel} exists already; name the snippet config differently'
    return str(path)


def small_batch(scope: str, with_masks: bool):
    """Two random 96x128 images: two objects each (boxes, masks), a random 4-class map, or a class label."""
    from test_reuse import det_batch, seg_batch
    if scope == 'mmseg':
        return seg_batch()
    if scope == 'mmpretrain':
        from mmpretrain.structures import DataSample
        return dict(inputs=[torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8) for _ in range(2)],
                    data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    batch = det_batch()
    if with_masks:
        from mmdet.structures.mask import BitmapMasks
        for sample in batch['data_samples']:
            masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
            for m, (x1, y1, x2, y2) in zip(masks, sample.gt_instances.bboxes.int().tolist()):
                m[y1:y2, x1:x2] = 1
            sample.gt_instances.masks = BitmapMasks(masks.numpy(), 96, 128)
    return batch


def train_one_step(cfg) -> dict:
    """Builds the snippet's model and optimizer and runs one training step at 96x128 with the auxiliary-loss hook."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from test_reuse import attach_hook
    init_default_scope(cfg.default_scope)
    # small size: the snippet's backbone and the heads' input channels as written; the heads' inner width and the
    # number of sampled RoIs small (they cost most of the step, and the snippets do not set them)
    if cfg.default_scope == 'mmseg':  # CPU, small images: BN instead of SyncBN, no fixed 512x512 padding
        cfg.model.data_preprocessor.size = None
        cfg.model.data_preprocessor.size_divisor = 32
        for head, channels in (('decode_head', 64), ('auxiliary_head', 32)):
            if cfg.model.get(head):
                cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
                cfg.model[head].channels = channels
    rcnn = cfg.model.get('train_cfg', {}).get('rcnn')
    if isinstance(rcnn, dict) and 'sampler' in rcnn:
        rcnn.sampler.num = 32
        cfg.model.train_cfg.rpn_proposal.max_per_img = 64
    init_cfg = cfg.model.backbone.get('init_cfg')
    assert init_cfg is None or init_cfg.get('type'), f'the backbone init_cfg has no type: {init_cfg}'
    cfg.model.backbone.init_cfg = None  # nothing to download or read here; the merge above is what is checked
    model = registry_of(cfg.default_scope).build(cfg.model)
    model.init_weights()
    hook = attach_hook(model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    with_masks = 'mask_head' in cfg.model.get('roi_head', {})
    log_vars = model.train_step(small_batch(cfg.default_scope, with_masks), optim)
    hook.after_run(None)
    return log_vars


def code_lines(text: str) -> List[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith('#')]


@pytest.mark.parametrize('block', PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_block_runs(block, configs_copy, monkeypatch):
    if block.not_run:
        assert named_configs(block.text), f'{block.where} is marked not-run but names no config'
        return
    if block.marker and block.marker.startswith('same-as '):
        path = block.marker.split(None, 1)[1]
        assert osp.isfile(osp.join(ROOT, path)), f'{block.where}: {path} does not exist'
        assert code_lines(block.text) == code_lines(read(path)), (
            f'{block.where} shows {path}, but the file differs (comments aside): copy the file into the doc')
        return  # the config itself is built by test_named_config_builds
    if not is_config(block.text):
        monkeypatch.chdir(ROOT)
        exec(compile(block.text, block.where, 'exec'), {'__name__': '__docs__'})
        return
    from mmengine.config import Config
    path = snippet_path(block, configs_copy)
    with open(path, 'w') as f:
        f.write(block.text)
    try:
        cfg = Config.fromfile(path)
        assert cfg.get('default_scope') in ('mmdet', 'mmseg', 'mmpretrain'), (
            'the config inherits no toolbox config (no default_scope): give it a _base_')
        log_vars = train_one_step(cfg)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f'{block.where}: the config snippet does not work: {type(e).__name__}: {e}') from e
    assert torch.isfinite(log_vars['loss'])
    backbone = cfg.model.backbone
    if backbone.get('type') == 'LaViT' and backbone.get('dp_loss'):
        assert 'loss_dp' in log_vars, f'{block.where}: LaViT has a DP loss, but loss_dp did not reach the losses'


# ------------------------------------------------------------------------------------------------------- links

@pytest.mark.parametrize('doc', DOCS)
def test_relative_links_resolve(doc):
    text = re.sub(r'```.*?```', '', read(doc), flags=re.S)
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'^[a-z]+:', target) or target.startswith('#'):
            continue
        if not osp.exists(osp.join(ROOT, osp.dirname(doc), target.split('#')[0])):
            broken.append(target)
    assert not broken, f'{doc} links to files that do not exist: {broken}'
