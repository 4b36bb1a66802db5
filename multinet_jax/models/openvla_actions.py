"""OpenVLA's Open-X actions as MultiNet scored them: how many action tokens it decodes for a dataset, which of the
statistics' dimensions it unnormalizes, and its per-dataset conversion of OpenVLA's 7-dim action before scoring.

Reproduced from MultiNet's OpenVLA harness, ManifoldRG/MultiNet `src/eval/profiling/openvla/` (the only OpenVLA
evaluation code in MultiNet's repository; its v1.0 scripts under `src/eval/profiling/openpi/` are Pi0's):

- Decoded dims (`decoded_dims`): its `prismatic/extern/hf/modeling_prismatic.py`,
  `OpenVLAForActionPrediction.get_action_dim`: under the `simple_mapping` and `naive_dim_extension` decoding
  strategies, `len(norm_stats[unnorm_key]["action"]["q01"])` tokens, the dataset's own action dimension. Its
  `data/dataset_statistics_dev.json` gives utokyo_xarm_bimanual (MultiNet's openx_bimanual) `simple_mapping` with
  14-dim statistics, so OpenVLA decodes 14 action tokens there, not 7.
- The ids read (`multinet_window`): its `_tokens_to_normalized_actions` takes the last `dims` ids of what
  `generate` returned (the prompt, then the generated ids up to the EOS), so a decode that ends early reads prompt
  ids as actions.
- Unnormalization mask (`multinet_mask`): its `experiments/robot/add_new_dataset_statistics.py` writes the
  statistics it adds with `mask = [True] * (action_dim - 1) + [False]`: the last dimension (the gripper) stays in
  [-1, 1], as OpenVLA's own statistics leave their gripper dimension.
- Conversion (`convert`): its `experiments/robot/openvla_action_decoding_utils.py`, `SimpleMapping.decode_action`
  (the default strategy, `openvla_profiling.EvalConfig.default_action_decoding_strategy`): the gripper value
  (index 6) transformed per `GRIPPER_PATTERNS`, then the dims reordered per `REORDER_PATTERNS`. The tables are
  MultiNet's as written, keys included: several gripper keys are shortened names ("nyu_rot", "utokyo_pr2", ...)
  that never equal the dataset names MultiNet passes, so for those datasets only the reordering ran, and so here.
  A gripper value outside a transform's range raised ValueError in MultiNet (losing the dataset); here that
  prediction is invalid. For utokyo_xarm_bimanual MultiNet's reorder pattern is 7-dim with a "TODO: simple mapping
  undefined for 14D bimanual action space" and its MSE against the 14-dim ground truth would fail, so no
  conversion is applied there and the 14 decoded dims are scored as they are (`conversion_note` says so in the
  metrics JSON).
- Ground truth (`drop_terminal_dim`): its `eval_utils.preprocess_expert_actions` scored each dataset's action with
  its `terminate_episode` dim removed (`ExpertActionUtils.drop_is_terminal_dim`, `TERMINAL_DIMS`): on
  berkeley_cable_routing the 7-dim action became 6 dims, as RPY_XYZ's conversion gives. The split's statistics are
  the raw action's for unnormalizing (OpenVLA decodes that many dims) and the dropped ones' for scoring; the
  protocol records the transform (`ground_truth`), so a resume never mixes the two scorings.

Dataset names are MultiNet's: a domain `openx_<name>` names dataset `<name>`; `openx_bimanual` is
utokyo_xarm_bimanual_converted_externally_to_rlds (`DOMAIN_DATASETS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from multinet_jax import domains
from multinet_jax.models.interface import InferenceOptions

OPENVLA_ACTION_DIM = 7
GRIPPER_INDEX = 6
BIMANUAL_DATASET = "utokyo_xarm_bimanual_converted_externally_to_rlds"
# MultiNet's domain names whose dataset name differs from `openx_<dataset>`.
DOMAIN_DATASETS = {"openx_bimanual": BIMANUAL_DATASET}

_ORDERS = {
    "XYZ_RPY_GRIPPER": (0, 1, 2, 3, 4, 5, 6),
    "GRIPPER_XYZ": (6, 0, 1, 2),
    "RPY_XYZ": (3, 4, 5, 0, 1, 2),
    "GRIPPER_RPY_XYZ": (6, 3, 4, 5, 0, 1, 2),
    "XYZ_GRIPPER": (0, 1, 2, 6),
    "XYZ_YPR_GRIPPER": (0, 1, 2, 5, 4, 3, 6),
    "XYZ_Y_GRIPPER": (0, 1, 2, 5, 6),
    "XYZ_RPY": (0, 1, 2, 3, 4, 5),
}
# SimpleMapping.REORDER_PATTERNS (bimanual left out: see the module docstring).
REORDER_PATTERNS = {
    "jaco_play": _ORDERS["GRIPPER_XYZ"],
    "berkeley_cable_routing": _ORDERS["RPY_XYZ"],
    "nyu_door_opening_surprising_effectiveness": _ORDERS["GRIPPER_RPY_XYZ"],
    "viola": _ORDERS["GRIPPER_RPY_XYZ"],
    "berkeley_autolab_ur5": _ORDERS["GRIPPER_RPY_XYZ"],
    "toto": _ORDERS["RPY_XYZ"],
    "columbia_cairlab_pusht_real": _ORDERS["GRIPPER_RPY_XYZ"],
    "nyu_rot_dataset_converted_externally_to_rlds": _ORDERS["XYZ_RPY_GRIPPER"],
    "stanford_hydra_dataset_converted_externally_to_rlds": _ORDERS["XYZ_RPY_GRIPPER"],
    "ucsd_kitchen_dataset_converted_externally_to_rlds": _ORDERS["XYZ_RPY_GRIPPER"],
    "ucsd_pick_and_place_dataset_converted_externally_to_rlds": _ORDERS["XYZ_GRIPPER"],
    "usc_cloth_sim_converted_externally_to_rlds": _ORDERS["XYZ_GRIPPER"],
    "utokyo_pr2_opening_fridge_converted_externally_to_rlds": _ORDERS["XYZ_RPY_GRIPPER"],
    "utokyo_pr2_tabletop_manipulation_converted_externally_to_rlds": _ORDERS["XYZ_RPY_GRIPPER"],
    "utokyo_xarm_pick_and_place_converted_externally_to_rlds": _ORDERS["XYZ_YPR_GRIPPER"],
    "stanford_mask_vit_converted_externally_to_rlds": _ORDERS["XYZ_Y_GRIPPER"],
    "eth_agent_affordances": _ORDERS["XYZ_RPY"],
    "imperialcollege_sawyer_wrist_cam": _ORDERS["XYZ_RPY_GRIPPER"],
    "conq_hose_manipulation": _ORDERS["XYZ_RPY_GRIPPER"],
    "plex_robosuite": _ORDERS["XYZ_RPY_GRIPPER"],
}
# ExpertActionUtils.drop_is_terminal_dim: the ground truth's terminate_episode dim, by dataset.
TERMINAL_DIMS = {
    "berkeley_cable_routing": 3,
    "nyu_door_opening_surprising_effectiveness": 4,
    "viola": 4,
    "berkeley_autolab_ur5": 4,
    "toto": 3,
    "columbia_cairlab_pusht_real": 4,
    "ucsd_kitchen_dataset_converted_externally_to_rlds": 7,
    "utokyo_pr2_opening_fridge_converted_externally_to_rlds": 7,
    "utokyo_pr2_tabletop_manipulation_converted_externally_to_rlds": 7,
    "imperialcollege_sawyer_wrist_cam": 7,
}
# The protocol's `ground_truth` entry on those datasets (`domains.Protocol.ground_truth`).
TERMINAL_DIM_DROPPED = "terminate_episode_dim_dropped"
# SimpleMapping.GRIPPER_PATTERNS, keys exactly as MultiNet wrote them.
GRIPPER_PATTERNS = {
    "jaco_play": "discrete_neg",
    "nyu_door_opening": "normalize_neg",
    "viola": "normalize_neg",
    "berkeley_autolab_ur5": "discrete_neg",
    "columbia_cairlab_pusht": "binary_complement",
    "nyu_rot": "binary",
    "stanford_hydra": "binary_complement",
    "ucsd_kitchen": "binary",
    "usc_cloth_sim": "complement",
    "utokyo_pr2": "binary",
    "utokyo_xarm_pick_and_place": "binary",
    "stanford_mask_vit": "normalize_binary_neg",
    "imperialcollege_sawyer": "binary",
    "conq_hose_manipulation": "binary",
    "plex_robosuite": "normalize_binary_neg",
}


def _in_range(value: float, low: float, high: float) -> float:
    if value < low or value > high:
        raise ValueError(f"gripper value {value} outside [{low}, {high}]")
    return value


def _binary(value: float) -> float:
    return 1.0 if _in_range(value, 0, 1) > 0.5 else 0.0


def _discrete(value: float) -> float:
    value = _in_range(value, 0, 1)
    return -1.0 if value < 0.05 else 1.0 if value > 0.95 else 0.0


def _normalize(value: float) -> float:
    return 2 * (_in_range(value, 0, 1) - 0.0) / (1.0 - 0.0) - 1


GRIPPER_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "binary": _binary,
    "binary_complement": lambda value: 1 - _binary(value),
    "discrete": _discrete,
    "discrete_neg": lambda value: -1 * _discrete(value),
    "normalize": _normalize,
    "normalize_neg": lambda value: -1 * _normalize(value),
    "normalize_binary_neg": lambda value: -1 * float(np.sign(_in_range(_normalize(value), -1, 1))),
    "complement": lambda value: 1 - value,
}


def dataset_name(domain: str) -> str:
    """MultiNet's dataset name of an Open-X domain (`openx_<dataset>`, `openx_bimanual` by its dataset name)."""
    return DOMAIN_DATASETS.get(domain, domain.removeprefix("openx_"))


def decoded_dims(stats: dict[str, Any]) -> int:
    """Action tokens OpenVLA decodes with these statistics: their dimension (MultiNet's `get_action_dim`)."""
    return len(stats["q01"])


def multinet_window(prompt_ids: np.ndarray, prompt_mask: np.ndarray, generated: np.ndarray, dims: int, eos_id: int) -> np.ndarray:
    """The `dims` ids MultiNet read as each row's action: the last `dims` of the prompt's ids followed by the generated
    ids up to and including the first EOS (its `_tokens_to_normalized_actions` read `generated_ids[0, -action_dim:]`
    of Hugging Face's `generate`, which returns the prompt too and stops at EOS, batch size 1). A row that stops early
    reads prompt ids and the EOS as action bins, as MultiNet did: OpenVLA emits 7 action ids and EOS, so on
    openx_bimanual's 14 dims the first 6 are prompt ids (bin 254) and the action sits in dims 6-12."""
    rows = []
    for ids, mask, row in zip(prompt_ids, np.asarray(prompt_mask, bool), generated):
        stops = np.flatnonzero(row == eos_id)
        kept = row if not stops.size else row[: stops[0] + 1]
        rows.append(np.concatenate([ids[mask], kept])[-dims:])
    return np.stack(rows)


def multinet_mask(stats: dict[str, Any]) -> dict[str, Any]:
    """Split statistics with MultiNet's mask (every dim unnormalized but the last); a mask already there is kept."""
    if "mask" in stats:
        return stats
    dims = decoded_dims(stats)
    return {**stats, "mask": [True] * (dims - 1) + [False]}


def drop_terminal_dim(values: np.ndarray, dataset: str) -> np.ndarray:
    """Ground truth `[..., D]` as MultiNet's OpenVLA harness scored it: `TERMINAL_DIMS`' dim removed where the
    dataset has one; a ground truth too narrow to hold it is refused (MultiNet's `drop_dimension` raised)."""
    values = np.asarray(values)
    index = TERMINAL_DIMS.get(dataset)
    if index is None:
        return values
    if values.shape[-1] <= index:
        raise ValueError(f"{dataset}: MultiNet's OpenVLA scoring drops the terminate_episode dim {index} of its ground "
                         f"truth, which has {values.shape[-1]} dims")
    return np.delete(values, index, axis=-1)


def domain_protocol(name: str) -> domains.Protocol:
    """OpenVLA's protocol on domain `name` (the registry's `Family.protocol`): the domain's, with the ground-truth
    transform named where MultiNet dropped a terminate_episode dim."""
    domain = domains.lookup(name)
    if domain.output is domains.Output.CONTINUOUS_ACTIONS and dataset_name(domain.name) in TERMINAL_DIMS:
        return dataclasses.replace(domain.protocol, ground_truth=TERMINAL_DIM_DROPPED)
    return domain.protocol


def has_conversion(dataset: str) -> bool:
    return dataset in REORDER_PATTERNS


def convert(action: Sequence[float], dataset: str) -> list[float] | None:
    """One unnormalized OpenVLA action (7 dims) -> the dataset's action (MultiNet's `SimpleMapping.decode_action`);
    None where MultiNet's gripper transform raised. Datasets without a pattern pass through unchanged."""
    values = np.asarray(action, np.float64).copy()
    try:
        if dataset in GRIPPER_PATTERNS:
            values[GRIPPER_INDEX] = GRIPPER_TRANSFORMS[GRIPPER_PATTERNS[dataset]](float(values[GRIPPER_INDEX]))
    except ValueError:
        return None
    if dataset in REORDER_PATTERNS:
        values = values[list(REORDER_PATTERNS[dataset])]
    return values.tolist()


def conversion_note(dataset: str, dims: int) -> dict[str, Any]:
    """What `eval` writes into `<domain>_metrics.json` about OpenVLA's actions on this dataset."""
    if has_conversion(dataset):
        rule = (f"MultiNet's SimpleMapping for {dataset}: gripper "
                f"{GRIPPER_PATTERNS.get(dataset, 'unchanged (no pattern under this exact name)')}, "
                f"dims reordered to {list(REORDER_PATTERNS[dataset])}; a gripper value its transform refuses is invalid")
    elif dataset == BIMANUAL_DATASET:
        rule = ("none: MultiNet's SimpleMapping for this dataset is 7-dim and marked undefined for its 14-dim actions; "
                "the decoded dims are scored as they are")
    else:
        rule = "none: MultiNet has no conversion for this dataset"
    return {"decoded_action_dims": dims, "multinet_dataset": dataset, "conversion": rule,
            "source": "ManifoldRG/MultiNet src/eval/profiling/openvla (modeling_prismatic.get_action_dim, "
                      "add_new_dataset_statistics mask, openvla_action_decoding_utils.SimpleMapping)"}


def predictions(actions: np.ndarray, norm: Callable[[np.ndarray], np.ndarray], dataset: str) -> list[list[float] | None]:
    """OpenVLA's `[b, 1, dims]` normalized actions -> per row the unnormalized action (`norm`: the bounds rule with
    the statistics it decoded for) converted for `dataset` as MultiNet did (`convert`); None when invalid."""
    values = norm(np.asarray(actions)[:, 0])
    rows = [row.tolist() if np.all(np.isfinite(row)) else None for row in values]
    if not has_conversion(dataset):
        return rows
    check_convertible(dataset, values.shape[-1])
    return [None if row is None else convert(row, dataset) for row in rows]


def check_convertible(dataset: str, dims: int) -> None:
    """MultiNet's conversions take OpenVLA's 7 dims: decoding another number for such a dataset is refused."""
    if has_conversion(dataset) and dims != OPENVLA_ACTION_DIM:
        raise ValueError(f"{dataset}: MultiNet converts OpenVLA's {OPENVLA_ACTION_DIM}-dim actions, but the statistics "
                         f"have {dims} dims; unnormalize with {OPENVLA_ACTION_DIM}-dim statistics in OpenVLA's order "
                         "(--unnormalize=checkpoint --unnorm_key=<dataset>)")


class MultiNetActions:
    """`interface.MultiNetActions` for OpenVLA: the rules above, as the evaluator applies them per domain."""

    def split_statistics(self, domain: str, stats: dict[str, Any]) -> dict[str, Any]:
        """The split's raw q01/q99 (terminate dim included: OpenVLA decodes the dataset's own width) with MultiNet's
        mask (the last dim stays normalized)."""
        return multinet_mask(stats)

    def ground_truth(self, domain: str, values: np.ndarray) -> np.ndarray:
        """The split's own, less its terminate_episode dim where MultiNet dropped one (`drop_terminal_dim`)."""
        return drop_terminal_dim(values, dataset_name(domain))

    def options(self, domain: str, continuous: bool, stats: dict[str, Any], options: InferenceOptions) -> InferenceOptions:
        """As many action tokens as the statistics have dims, from center-cropped images, as MultiNet ran OpenVLA;
        an Open-X domain whose conversion cannot take those dims is refused before any model time."""
        dims = decoded_dims(stats)
        if continuous:
            check_convertible(dataset_name(domain), dims)
        return dataclasses.replace(options, action_dim=dims, center_crop=True)

    def predictions(self, actions: np.ndarray, norm: Callable[[np.ndarray], np.ndarray], domain: str) -> list[list[float] | None]:
        return predictions(actions, norm, dataset_name(domain))

    def note(self, domain: str, options: InferenceOptions) -> dict[str, Any]:
        return {"openvla_actions": {**conversion_note(dataset_name(domain), options.action_dim),
                                    "center_crop": options.center_crop}}
