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


def main() -> None:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for name, cells in (("01_latent_tap_and_intervene", TAP_CELLS), ("02_fit_conceptor_and_steer", STEER_CELLS)):
        out = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(new_notebook(cells=cells, metadata=meta), out)
        print(out)


if __name__ == "__main__":
    main()
