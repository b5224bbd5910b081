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
        "from latentstack.cli import repo_root\n"
        "from latentstack.latent import Tap, Intervention, module_snapshot, assert_model_unchanged\n"
        "from latentstack.policies.factory import make_policy\n"
        "from latentstack.sim.metaworld_env import MetaWorldLangEnv\n"
        "from latentstack.sim.suites import load_suite\n"
        "torch.set_num_threads(1)\n"
        "policy = make_policy(str(repo_root() / 'policies/vla_metaworld_mt6'))\n"
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


def main() -> None:
    nb = new_notebook(cells=TAP_CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    out = ROOT / "notebooks" / "01_latent_tap_and_intervene.ipynb"
    nbformat.write(nb, out)
    print(out)


if __name__ == "__main__":
    main()
