"""Writes notebooks/*.ipynb from the cells below (keeps notebook sources reviewable as Python)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

TAP_CELLS = [
    new_markdown_cell(
        "# Reading and writing a policy's latent state\n\n"
        "Load the shipped VLA, run it on one MetaWorld observation, **tap** every action-expert layer at "
        "every denoise step, then **intervene** (identity, then a shrink) and check the model is unchanged "
        "afterwards. Executed headless by `tests/test_notebooks.py`."
    ),
    new_code_cell(
        "import os\nos.environ.setdefault('MUJOCO_GL', 'egl')\nimport numpy as np, torch\n"
        "from latentstack.core.paths import resolve_path\n"
        "from latentstack.latent import Tap, Intervention, module_snapshot, assert_model_unchanged\n"
        "from latentstack.policies.factory import make_policy\n"
        "from latentstack.sim.metaworld_env import MetaWorldLangEnv\n"
        "from latentstack.sim.suites import load_suite\n"
        "torch.set_num_threads(1)\n"
        "policy = make_policy(str(resolve_path('policies/vla_metaworld_mt6')))\n"
        "suite = load_suite('metaworld_mt6')\nspec = suite.tasks[0]\n"
        "env = MetaWorldLangEnv(spec.name, image_size=suite.image_size, camera=suite.camera,\n"
        "                       max_episode_steps=spec.max_episode_steps, instruction=spec.instruction)\n"
        "obs, _ = env.reset(seed=suite.seeds['select'][0])\nsorted(policy.latent_sites())"
    ),
    new_code_cell(
        "snap = module_snapshot(policy)\n"
        "names = [n for n in policy.latent_sites() if n.startswith('expert.')]\n"
        "with Tap(policy, names) as tap:\n"
        "    policy.reset(seed=0)\n"
        "    a0 = policy.select_action(obs)\n"
        "h = tap.stack(names[-1])\n"
        "print(names[-1], tuple(h.shape), [m['denoise_step'] for m in tap.meta(names[-1])])\n"
        "assert h.shape[0] == policy.config.num_inference_steps"
    ),
    new_code_cell(
        "with Intervention(policy, {n: (lambda v, meta: v) for n in names}):\n"
        "    policy.reset(seed=0)\n"
        "    a_id = policy.select_action(obs)\n"
        "with Intervention(policy, {names[-1]: (lambda v, meta: 0.5 * v)}):\n"
        "    policy.reset(seed=0)\n"
        "    a_shrunk = policy.select_action(obs)\n"
        "assert np.array_equal(a0, a_id), 'identity intervention must be an exact no-op'\n"
        "assert_model_unchanged(policy, snap)\n"
        "print('action', a0, '\\nidentity', a_id, '\\nshrunk h*0.5', a_shrunk)\nenv.close()"
    ),
]


STEER_CELLS = [
    new_markdown_cell(
        "# Fit a COAST conceptor and steer a policy with it\n\n"
        "Roll out the deliberately weak VLA on a few *fit* seeds of one task, tap `expert.layer2` at every "
        "denoising step, fit `C_success ∧ ¬C_failure` (paper preset), read the geometry diagnostics, then steer "
        "and check the gate diagnostic (is it more than shrinkage?). The full study — selection on select "
        "seeds, controls, held-out test — is `lstack steer study` (`reports/coast/summary.md`). "
        "Executed headless by `tests/test_notebooks.py`."
    ),
    new_code_cell(
        "import os, tempfile\nos.environ.setdefault('MUJOCO_GL', 'egl')\nimport numpy as np, torch\n"
        "from latentstack.core.paths import resolve_path\n"
        "from latentstack.policies.factory import make_policy\n"
        "from latentstack.sim.suites import load_suite\n"
        "from latentstack.steering.collect import collect_rollouts, split_by_label\n"
        "from latentstack.steering.fit import fit_contrastive\n"
        "from latentstack.steering.intervention import SteeringArtifact, gate_diagnostics, make_operator\n"
        "torch.set_num_threads(1)\n"
        "policy = make_policy(str(resolve_path('policies/vla_metaworld_mt6_weak'))); policy.eval()\n"
        "suite = load_suite('metaworld_mt6')\nSITE = 'expert.layer2'\n"
        "with torch.inference_mode():\n"
        "    rollouts = collect_rollouts(suite, policy, [SITE], split='fit', n=8, tasks=['button-press-topdown-v3'], keep='mean')\n"
        "print([(r.seed, r.success) for r in rollouts])"
    ),
    new_code_cell(
        "succ, fail = split_by_label(rollouts, SITE)\n"
        "fits = fit_contrastive(succ, fail, [0.5, 10.0], 'paper', 'global', SITE)\n"
        "for a, f in fits.items():\n"
        "    print(f'alpha {a:>4}: quota {f.diagnostics[\"quota\"]:.4f}  sim(C_s, C_f) {f.diagnostics[\"similarity\"]:.3f}  '\n"
        "          f'samples {f.n_samples}')\n"
        "art = SteeringArtifact.from_fit(fits[0.5], beta=0.1, layer=2, seeds={'fit': [r.seed for r in rollouts]})\n"
        "stem = art.save(os.path.join(tempfile.mkdtemp(), 'demo__expert.layer2__a0.5__paper'))[0]\n"
        "art = SteeringArtifact.load(stem, expected_d=policy.config.d_model)\nsorted(art.card)"
    ),
    new_code_cell(
        "H = torch.cat([r.states[SITE] for r in rollouts])  # (calls, denoise steps, 1, d)\n"
        "print('coast    ', gate_diagnostics(H, art.C, 0.1))\n"
        "print('shrinkage', gate_diagnostics(H, make_operator('shrinkage', art), 0.1))\n"
        "obs_policy = {'image': np.zeros((64, 64, 3), np.uint8), 'state': np.zeros(4, np.float32),\n"
        "              'instruction': 'press the button from the top'}\n"
        "with torch.inference_mode():\n"
        "    policy.reset(seed=0); a_base = policy.select_action(obs_policy)\n"
        "    with art.intervention(policy, beta=0.0):\n"
        "        policy.reset(seed=0); a_zero = policy.select_action(obs_policy)\n"
        "    with art.intervention(policy, beta=0.1):\n"
        "        policy.reset(seed=0); a_steer = policy.select_action(obs_policy)\n"
        "assert np.array_equal(a_base, a_zero), 'beta = 0 must be bit-identical'\n"
        "print('base', a_base, '\\nsteered', a_steer)"
    ),
]


FINETUNE_CELLS = [
new_markdown_cell("""# Fine-tune the shipped VLA on a task it has not seen

The shipped `policies/vla_metaworld_mt6` was trained on six MetaWorld tasks. Here it learns a seventh,
`button-press-v3` ("press the button", pressed from the front — the training set only has the top-down press),
from scripted-expert demonstrations, through the one supervised training API
(`latentstack.training.train_supervised`), and is evaluated **before and after, on the same held-out test seeds**
with Wilson 95% intervals. The instruction's words are all in the checkpoint's vocabulary, so the tokenizer and
the normalization statistics of the shipped model are kept as they are.

Budget: `LSTACK_NB_BUDGET=tiny` (the default; what `tests/test_notebooks.py` runs: a few demos, a few hundred
steps, 5 test episodes — a smoke run, its numbers mean nothing) or `full` (the run behind
`reports/vla_finetune/`).""" ),
new_code_cell("""import os, tempfile, time
os.environ.setdefault('MUJOCO_GL', 'egl')
from pathlib import Path
import torch
from latentstack.policies.factory import make_policy
from latentstack.policies.train import load_frames
from latentstack.sim.evaluation import evaluate, outcome_table, write_report
from latentstack.sim.record import record_demos
from latentstack.sim.suites import load_suite, suite_from_dict
from latentstack.training import train_supervised

BUDGET = os.environ.get('LSTACK_NB_BUDGET', 'tiny')
B = {'tiny': dict(demos=4, steps=60, batch=16, episodes=5, retention=1),
     'full': dict(demos=40, steps=1500, batch=64, episodes=30, retention=10)}[BUDGET]
WORK = Path(tempfile.mkdtemp(prefix='finetune_'))          # demos + training state (scratch)
OUT = Path(os.environ.get('LSTACK_NB_OUT') or WORK / 'report')  # JSON + PNG of the before/after run
# Disjoint seed ranges: demos from train seeds, numbers from test seeds only (never seen in training).
suite = suite_from_dict({
    'name': 'metaworld_button_front', 'image_size': 64, 'camera': 'corner4',
    'seeds': {'train': [0, 1000], 'select': [10000, 10100], 'test': [20000, 20100]},
    'tasks': [{'name': 'button-press-v3', 'instruction': 'press the button', 'max_episode_steps': 120}],
})
torch.manual_seed(0)
BUDGET, B"""),
new_markdown_cell("## Demonstrations (scripted expert, train seeds) → a LeRobotDataset"),
new_code_cell("""t0 = time.time()
ds = record_demos(suite, WORK / 'demos', episodes_per_task=B['demos'], split='train', progress=False)
data = load_frames(WORK / 'demos')
print(f'{data.num_episodes} episodes, {len(data)} frames, tasks {data.tasks} ({time.time() - t0:.0f} s)')"""),
new_markdown_cell("## Fine-tune through the one training loop"),
new_code_cell("""base = make_policy('policies/vla_metaworld_mt6')           # kept untouched: the 'before' condition
policy = make_policy('policies/vla_metaworld_mt6')         # fine-tuned in place
unk = [w for w in data.tasks[0].split() if w not in policy.config.vocab]
assert not unk, f'instruction words outside the vocabulary: {unk}'
task_tokens, _ = policy.tokenizer(data.tasks)
chunk = policy.config.chunk_size
sampler = torch.Generator().manual_seed(0)

def step_fn(step):
    idx = torch.randint(0, len(data), (B['batch'],), generator=sampler)
    loss, _ = policy.compute_loss(data.batch(idx, chunk, task_tokens))
    return loss, {}

policy.train()
opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=0.01)
result = train_supervised(policy, step_fn, opt, steps=B['steps'], grad_clip=1.0, state={'sampler': sampler},
                          out_dir=WORK / 'train', log_every=max(1, B['steps'] // 20), progress=False,
                          desc='finetune vla')
policy.eval()
hist = result.history
print(f"loss {hist[0]['loss']:.4f} -> {hist[-1]['loss']:.4f} over {result.step} steps; plot: {WORK / 'train' / 'loss_curve.png'}")"""),
new_markdown_cell("## Before / after on the same held-out test seeds"),
new_code_cell("""res = evaluate(suite, {'before': base, 'after': policy}, B['episodes'], split='test', progress=False)
print(outcome_table(res))
import shutil
from latentstack.core.artifacts import artifact_fingerprint
from latentstack.core.paths import resolve_path
meta = {'title': f'button-press-v3 before/after fine-tuning ({BUDGET} budget)', 'split': 'test', 'budget': BUDGET,
        **B, 'task': suite.tasks[0].name, 'instruction': suite.tasks[0].instruction,
        'seeds': list(suite.seeds['test'])[:B['episodes']], 'demo_episodes': data.num_episodes,
        'demo_frames': len(data), 'source': 'policies/vla_metaworld_mt6',
        'source_sha256': artifact_fingerprint(resolve_path('policies/vla_metaworld_mt6')),
        'loss_first_window': hist[0]['loss'], 'loss_last_window': hist[-1]['loss'], 'train_steps': result.step,
        'command': 'LSTACK_NB_BUDGET=full LSTACK_NB_OUT=reports/vla_finetune python scripts/run_notebook.py notebooks/03_finetune_vla.ipynb'}
write_report(res, OUT, meta, stem='finetune')
shutil.copy(WORK / 'train' / 'loss_curve.png', OUT / 'loss_curve.png')
before, after = (res[k].episodes for k in ('before', 'after'))
assert [e.seed for e in before] == [e.seed for e in after]  # paired: same seeds for both conditions
print('paired (before, after) outcomes:', [(int(b.success), int(a.success)) for b, a in zip(before, after)])"""),
new_markdown_cell("""## What did it forget? The six training tasks, before / after

Fine-tuning used only the new task's demos, so the old skills may drift: the same paired comparison on the
`metaworld_mt6` suite's held-out test seeds."""),
new_code_cell("""mt6 = load_suite('metaworld_mt6')
ret = evaluate(mt6, {'before': base, 'after': policy}, B['retention'], split='test', progress=False)
print(outcome_table(ret))
write_report(ret, OUT, {**meta, 'title': f'metaworld_mt6 before/after fine-tuning on button-press-v3 ({BUDGET})',
                        'suite': 'metaworld_mt6', 'seeds': list(mt6.seeds['test'])[:B['retention']]}, stem='retention')"""),
]


def main() -> None:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for name, cells in (("01_latent_tap_and_intervene", TAP_CELLS), ("02_fit_conceptor_and_steer", STEER_CELLS),
                        ("03_finetune_vla", FINETUNE_CELLS)):
        out = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(new_notebook(cells=cells, metadata=meta), out)
        print(out)


if __name__ == "__main__":
    main()
