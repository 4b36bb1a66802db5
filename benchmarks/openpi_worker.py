"""Real openpi's side of `benchmarks/pi0_throughput.py`: openpi's own Pi0 / Pi0.5 code, in openpi's own environment.

openpi is not on PyPI (the name there is a 0.0.0 placeholder), so this worker imports it from a source checkout
(`--openpi_src`: the `src` folder of a clone of github.com/Physical-Intelligence/openpi) and runs under the
interpreter of a venv holding openpi's pinned stack (jax 0.5.3, flax 0.10.2, orbax-checkpoint 0.11.13, jaxtyping,
beartype, einops, augmax). It imports nothing from this project, so the two sides share no code.

    <openpi venv>/bin/python benchmarks/openpi_worker.py serve --openpi_src=<clone>/src --case=<case.npz>
    <openpi venv>/bin/python benchmarks/openpi_worker.py reproduce --openpi_src=<clone>/src --fixture=<dir>

`serve` builds `Pi0Config(...)` for the case's sizes (openpi's own variant names where they match, e.g. "dummy"
Gemma and SigLIP So400m/14), loads EXACTLY the parameters the case file holds (our model's tree: openpi's layout)
through `Pi0Config.load`, AOT-compiles `sample_actions` (and the prefix pass alone) the way openpi's policies jit it
(`jax.jit` over the split nnx state, as `nnx_utils.module_jit` does), then answers JSON lines on stdin/stdout:
`{"op": "sample"}` -> `{"seconds": ..., "actions": [...]}` and `{"op": "prefix"}` -> `{"seconds": ...}`, so the
caller can time the two implementations call by call in alternation while the idle side waits on its pipe.

`reproduce` restores one of `../shared/openpi_reference/{pi0,pi05}` (checkpoints and outputs openpi itself wrote)
through openpi's `restore_params` + `Pi0Config.load` and prints how far `sample_actions` on the stored inputs and
noise lands from the stored actions: the check that the code under `--openpi_src` is openpi.

Sizes openpi has no variant for (the fixtures' tiny Gemma / SigLIP, a vocabulary of 1024) are injected by
wrapping `gemma.get_config` and `siglip.decode_variant` and setting `gemma.PALIGEMMA_VOCAB_SIZE`; the model code
itself runs unchanged. `ready` lists what was injected.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
SO400M_14 = {"width": 1152, "depth": 27, "mlp_dim": 4304, "num_heads": 16, "patch_size": (14, 14)}
OPENPI_GEMMA_VARIANTS = ("dummy", "gemma_300m", "gemma_2b")


def fail(message: str) -> None:
    """One line on stderr and exit 2: the caller reports it as is."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def import_openpi(openpi_src: str) -> dict[str, Any]:
    """openpi's modules from `openpi_src` (the `src` folder of a clone); a wrong path is a one-line error."""
    package = pathlib.Path(openpi_src) / "openpi" / "models" / "pi0.py"
    if not package.is_file():
        fail(f"{openpi_src}: --openpi_src is not openpi's src folder (no openpi/models/pi0.py under it)")
    sys.path.insert(0, str(pathlib.Path(openpi_src).resolve()))
    try:
        modules = {name: importlib.import_module(f"openpi.models.{name}") for name in ("gemma", "siglip", "model", "pi0_config", "pi0")}
        return {**modules, "array_typing": importlib.import_module("openpi.shared.array_typing")}
    except Exception as error:  # noqa: BLE001 - any import failure of the user's checkout is reported in one line
        fail(f"{openpi_src}: importing openpi failed: {type(error).__name__}: {error}".replace("\n", " "))
        raise


def openpi_config(modules: dict[str, Any], spec: dict[str, Any]) -> tuple[Any, list[str]]:
    """`Pi0Config` for `spec`'s sizes, with openpi's variant names where they exist; returns what had to be injected."""
    gemma, siglip = modules["gemma"], modules["siglip"]
    injected, variants, names = [], {}, []
    original_get_config, original_decode = gemma.get_config, siglip.decode_variant
    for role in ("paligemma", "action_expert"):
        wanted = gemma.Config(**spec[role])
        name = next((v for v in OPENPI_GEMMA_VARIANTS if original_get_config(v) == wanted), None)
        if name is None:
            name = f"injected_{role}"
            injected.append(f"gemma {role} {spec[role]}")
        variants[name] = wanted
        names.append(name)
    gemma.get_config = lambda variant: variants.get(variant) or original_get_config(variant)
    vision = {**spec["siglip"], "patch_size": tuple(spec["siglip"]["patch_size"])}
    if vision != SO400M_14:
        injected.append(f"siglip {spec['siglip']}")
        siglip.decode_variant = lambda variant: vision if variant == "So400m/14" else original_decode(variant)
    if spec["vocab_size"] != gemma.PALIGEMMA_VOCAB_SIZE:
        injected.append(f"vocab_size {spec['vocab_size']}")
        gemma.PALIGEMMA_VOCAB_SIZE = spec["vocab_size"]
    config = modules["pi0_config"].Pi0Config(
        dtype=spec["dtype"],
        paligemma_variant=names[0],
        action_expert_variant=names[1],
        action_dim=spec["action_dim"],
        action_horizon=spec["action_horizon"],
        max_token_len=spec["max_token_len"],
        pi05=spec["pi05"],
    )
    return config, injected


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def observation(modules: dict[str, Any], arrays: Any, prefix: str = "") -> Any:
    """openpi's `Observation` from `{prefix}image/<cam>`, `{prefix}image_mask/<cam>`, state and prompt arrays."""
    import jax.numpy as jnp

    return modules["model"].Observation(
        images={camera: jnp.asarray(arrays[f"{prefix}image/{camera}"]) for camera in CAMERAS},
        image_masks={camera: jnp.asarray(arrays[f"{prefix}image_mask/{camera}"]) for camera in CAMERAS},
        state=jnp.asarray(arrays[f"{prefix}state"]),
        tokenized_prompt=jnp.asarray(arrays[f"{prefix}tokenized_prompt"]),
        tokenized_prompt_mask=jnp.asarray(arrays[f"{prefix}tokenized_prompt_mask"]),
    )


class OpenpiSampler:
    """openpi's model loaded with given parameters, `sample_actions` and its prefix pass AOT-compiled."""

    def __init__(self, modules: dict[str, Any], config: Any, params: dict[str, Any], obs: Any, noise: np.ndarray,
                 num_steps: int):
        import flax.nnx as nnx
        import jax
        import jax.numpy as jnp

        dtype = jnp.dtype(config.dtype)
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), params)
        model = config.load(params)
        graphdef, state = nnx.split(model)
        pi0 = modules["pi0"]

        def sample(state, rng, obs, noise):
            return nnx.merge(graphdef, state).sample_actions(rng, obs, num_steps=num_steps, noise=noise)

        def prefix(state, obs):
            module = nnx.merge(graphdef, state)
            obs = modules["model"].preprocess_observation(None, obs, train=False)
            tokens, mask, ar_mask = module.embed_prefix(obs)
            attn_mask = pi0.make_attn_mask(mask, ar_mask)
            positions = jnp.cumsum(mask, axis=1) - 1
            return module.PaliGemma.llm([tokens, None], mask=attn_mask, positions=positions)[1]

        self.args = (state, jax.random.key(0), obs, jnp.asarray(noise))
        # `lower` hands the Observation dataclass abstract leaves that openpi's runtime type checks reject (its jit
        # path never lowers explicitly); the checks only run while tracing, so they are off for the AOT compile.
        with modules["array_typing"].disable_typechecking():
            start = time.perf_counter()
            self.sample = jax.jit(sample).lower(*self.args).compile()
            self.compile_s = time.perf_counter() - start
            self.prefix = jax.jit(prefix).lower(state, obs).compile()
        self.prefix_args = (state, obs)

    def run_sample(self) -> tuple[float, np.ndarray]:
        import jax

        start = time.perf_counter()
        actions = jax.block_until_ready(self.sample(*self.args))
        return time.perf_counter() - start, np.asarray(actions, np.float32)

    def run_prefix(self) -> float:
        import jax

        start = time.perf_counter()
        jax.block_until_ready(self.prefix(*self.prefix_args))
        return time.perf_counter() - start


def serve(args: argparse.Namespace) -> None:
    modules = import_openpi(args.openpi_src)
    import jax

    case = np.load(args.case)
    spec = json.loads(str(case["spec"]))
    config, injected = openpi_config(modules, spec)
    params = unflatten({key[len("params/"):]: case[key] for key in case.files if key.startswith("params/")})
    sampler = OpenpiSampler(modules, config, params, observation(modules, case, "obs/"), case["noise"], spec["num_steps"])
    del params
    print(json.dumps({"ready": True, "jax": jax.__version__, "compile_s": sampler.compile_s, "injected": injected}),
          flush=True)
    for line in sys.stdin:
        op = json.loads(line)["op"]
        if op == "sample":
            seconds, actions = sampler.run_sample()
            print(json.dumps({"seconds": seconds, "actions": actions.tolist()}), flush=True)
        elif op == "prefix":
            print(json.dumps({"seconds": sampler.run_prefix()}), flush=True)
        else:
            fail(f"unknown op {op!r} (expected sample or prefix)")


def fixture_spec(readme: dict[str, Any], data: Any, dtype: str) -> dict[str, Any]:
    """The sizes a `../shared/openpi_reference` fixture's README.json states, in `serve`'s spec form."""

    def sizes(text: str) -> dict[str, int]:
        return {key: int(value) for key, value in (item.split("=") for item in text.split() if "=" in item)}

    llm, expert, vision = sizes(readme["paligemma_llm"]), sizes(readme["action_expert"]), sizes(readme["siglip"])
    gemma_keys = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
    return {
        "paligemma": {key: llm[key] for key in gemma_keys},
        "action_expert": {key: expert[key] for key in gemma_keys},
        "siglip": {**{key: vision[key] for key in ("width", "depth", "mlp_dim", "num_heads")},
                   "patch_size": (vision["patch"], vision["patch"])},
        "vocab_size": llm["vocab"],
        "action_dim": data["noise"].shape[-1],
        "action_horizon": data["noise"].shape[-2],
        "max_token_len": data["obs/tokenized_prompt"].shape[-1],
        "pi05": "pi05=True" in readme["config"],
        "dtype": dtype,
    }


def reproduce(args: argparse.Namespace) -> None:
    """openpi's code on an openpi-written checkpoint and inputs: max |ours - stored| / max |stored| per output."""
    modules = import_openpi(args.openpi_src)
    import jax
    import jax.numpy as jnp

    fixture = pathlib.Path(args.fixture)
    readme = json.loads((fixture / "README.json").read_text())
    data = np.load(fixture / "io.npz")
    report: dict[str, Any] = {"fixture": fixture.name, "openpi_commit_of_fixture": readme["openpi_commit"],
                              "jax": jax.__version__}
    for dtype, suffix in (("float32", "f32"), ("bfloat16", "bf16")):
        config, injected = openpi_config(modules, fixture_spec(readme, data, dtype))
        report.setdefault("injected", injected)
        params = modules["model"].restore_params(fixture / "ckpt" / "0" / "params", dtype=jnp.dtype(dtype))
        model = config.load(params)
        obs = observation(modules, data, "obs/")
        for steps in (10, 3):
            actions = model.sample_actions(jax.random.key(1), obs, num_steps=steps, noise=jnp.asarray(data["noise"]))
            stored = data[f"actions_{steps}step_{suffix}"]
            difference = float(np.abs(np.asarray(actions, np.float32) - stored).max())
            report[f"actions_{steps}step_{suffix}_relative_max_diff"] = difference / float(np.abs(stored).max())
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["serve", "reproduce"])
    parser.add_argument("--openpi_src", required=True, help="the src folder of a clone of Physical-Intelligence/openpi")
    parser.add_argument("--case", help="serve: npz with spec, params/..., obs/... and noise (written by pi0_throughput)")
    parser.add_argument("--fixture", help="reproduce: a ../shared/openpi_reference/{pi0,pi05} folder")
    args = parser.parse_args()
    if args.mode == "serve" and not args.case:
        fail("serve needs --case")
    if args.mode == "reproduce" and not args.fixture:
        fail("reproduce needs --fixture")
    try:
        serve(args) if args.mode == "serve" else reproduce(args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - reported in one line to the caller, which shows only that line
        first_line = next((row for row in str(error).splitlines() if row.strip()), "")
        fail(f"openpi worker ({args.mode}): {type(error).__name__}: {first_line}")


if __name__ == "__main__":
    main()
