"""Plots, read back from the rendered figures: one unit per value axis and named in its label, value axes from 0 (a
zero is a bar of height zero, labelled), whole-number ticks for counts, turns and layers, every text inside the
image and readable at 100 %, legends outside the data, and a value a run did not report never drawn as a NaN."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

import eval_helpers
import multinet_jax
from multinet_jax import cross_run_report, domains, metrics, plots
from multinet_jax.eval import summary
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD
from multinet_jax.probing import layer_curves

MIN_TEXT_PIXELS = 12  # 9 pt at 100 dpi; matplotlib's defaults are 10 pt and up

BFCL_METRICS = {  # a model that failed every turn, as `score` writes it
    "turn_level_accuracy": {"turn_1_accuracy": 0.0, "turn_2_accuracy": 0.0, "turn_3_accuracy": 0.0},
    "exact_match_accuracy": 0.0, "avg_turn_of_first_failure": 1.0, "invalid_turn_percentage": 100.0,
}


def _overcooked_records() -> list[dict]:
    truths, predictions = [0, 5, 5, 35], [5, 5, None, 35]
    return [{"id": str(i), "prediction": p, "ground_truth": t} for i, (p, t) in enumerate(zip(predictions, truths))]


def _probe_records(action_head: bool) -> list[dict]:
    """Act2Answer probe records of two categories, both layouts of 3 items each."""
    records = []
    for index in range(12):
        truth = index % 2
        records.append({"id": str(index // 2), "category": ("color", "shape")[index // 6], "layout": ("original", "swapped")[truth],
                        "ground_truth": truth, "prediction": 0, "action_prediction": truth if action_head else None,
                        "action_head": action_head})
    return records


def _rendered(figure):
    """The figure drawn at `plots.DPI` by Agg, as `plots.save` draws it; returns its renderer."""
    assert figure.dpi == plots.DPI
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _ticks(axis) -> list[float]:
    """The tick locations an x or y axis draws (matplotlib also keeps some just outside its range)."""
    low, high = sorted(axis.get_view_interval())
    return [float(tick) for tick in axis.get_ticklocs() if low - 1e-9 <= tick <= high + 1e-9]


def _texts(figure) -> list[Text]:
    """Every text the figure draws (not the labels of ticks outside an axis' range)."""
    undrawn = set()
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            drawn = _ticks(axis)
            undrawn |= {id(label) for tick in axis.get_major_ticks() if tick.get_loc() not in drawn
                        for label in (tick.label1, tick.label2)}
    return [text for text in figure.findobj(Text)
            if text.get_visible() and text.get_text().strip() and id(text) not in undrawn]


def _bar_labels(axes) -> list[str]:
    return [text.get_text() for text in axes.texts]


def _assert_readable_and_inside(figure) -> None:
    """Every visible text at least MIN_TEXT_PIXELS high and within the image (nothing clipped)."""
    renderer = _rendered(figure)
    frame = figure.bbox
    for text in _texts(figure):
        assert text.get_fontsize() * plots.DPI / 72 >= MIN_TEXT_PIXELS, (text.get_text(), text.get_fontsize())
        box = text.get_window_extent(renderer)
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, text.get_text()
    del renderer


def _assert_legends_outside_the_data(figure) -> None:
    renderer = _rendered(figure)
    legends = [legend for legend in figure.findobj(lambda artist: artist.__class__.__name__ == "Legend")]
    assert legends
    for legend in legends:
        for axes in figure.axes:
            assert not legend.get_window_extent(renderer).overlaps(axes.get_window_extent(renderer))


def test_class_distribution_shows_every_class_with_zero_counts():
    labels, predicted, truth = summary._class_counts(domains.lookup("overcooked_ai"),
                                                     multinet_jax.score("overcooked_ai", _overcooked_records()),
                                                     _overcooked_records())
    assert labels == [str(index) for index in range(36)] + ["invalid"]
    assert dict(zip(labels, predicted)) == {**{label: 0 for label in labels}, "5": 2, "35": 1, "invalid": 1}
    assert dict(zip(labels, truth)) == {**{label: 0 for label in labels}, "0": 1, "5": 2, "35": 1}


def test_one_unit_per_axis_named_in_its_label_and_counts_are_whole_numbers():
    """Overcooked: F1 scores (0 to 1), the Brier error (0 to 2) and a percentage each on an axis of their own."""
    scored = multinet_jax.score("overcooked_ai", _overcooked_records())
    metrics = {"exact_match": 0.5, "micro_f1": 0.4, "macro_f1": 0.0, "avg_dataset_amae": 1.25, "percentage_invalids": 25.0,
               "predicted_actions": scored["predicted_actions"]}
    figure = summary.domain_figure(domains.lookup("overcooked_ai"), metrics, _overcooked_records())
    fractions, brier, percent, distribution = figure.axes
    assert [tick.get_text() for tick in fractions.get_yticklabels()] == ["exact_match", "micro_f1", "macro_f1"]
    assert fractions.get_xlabel() == "fraction (0 to 1)" and fractions.get_xlim() == (0, 1)
    assert [tick.get_text() for tick in brier.get_yticklabels()] == ["avg_dataset_amae"] and brier.get_xlim() == (0, 2)
    assert brier.get_xlabel() == "Brier absolute error (0 to 2)"
    assert percent.get_xlabel() == "percent (0 to 100)" and percent.get_xlim() == (0, 100)
    assert _bar_labels(fractions) == ["0.5", "0.4", "0"] and [bar.get_width() for bar in fractions.patches] == [0.5, 0.4, 0]
    _rendered(figure)
    assert distribution.get_ylabel() == "samples" and _ticks(distribution.yaxis) == [0, 1, 2]
    assert len(distribution.get_xticklabels()) == 37
    _assert_readable_and_inside(figure)
    _assert_legends_outside_the_data(figure)


def test_text_answering_families_are_plotted_as_they_were_scored():
    """Magma answers Overcooked with 36 probabilities (its class: their argmax, as scored) and Open-X quadrupedal in
    text parsed to an action (an error histogram, not an answer-length one)."""
    from multinet_jax.eval.loop import domain_for

    overcooked = domain_for("magma", "overcooked_ai")
    records = [{"id": str(i), "prediction": [float(j == truth) for j in range(36)], "ground_truth": truth,
                metrics.ANSWER_RULE_FIELD: overcooked.protocol.answer} for i, truth in enumerate((0, 5, 5, 35))]
    scored = multinet_jax.score(overcooked.score_domain, records)
    assert scored["exact_match"] == 1.0
    labels, predicted, truth = summary._class_counts(overcooked, scored, records)
    assert predicted == truth and dict(zip(labels, predicted))["5"] == 2 and len(labels) == 37

    quadrupedal = domain_for("magma", "openx_quadrupedal")
    assert quadrupedal.output is not domains.Output.CONTINUOUS_ACTIONS and quadrupedal.metric_kind == "continuous"
    records = [{"id": str(i), "prediction": [0.1 * i] * 12, "ground_truth": [0.0] * 12} for i in range(8)]
    figure = summary.domain_figure(quadrupedal, multinet_jax.score(quadrupedal.score_domain, records), records)
    distribution = figure.axes[-1]
    assert distribution.get_title() == "error distribution (8 valid of 8 predictions)"
    assert sum(bar.get_height() for bar in distribution.patches) == 8
    # None valid: the panel says so rather than standing empty.
    invalid = [{**record, "prediction": None} for record in records]
    figure = summary.domain_figure(quadrupedal, multinet_jax.score(quadrupedal.score_domain, invalid), invalid)
    assert figure.axes[-1].get_title() == "error distribution (0 valid of 8 predictions)"


def test_error_plots_leave_out_what_the_metrics_call_invalid():
    """A finite prediction whose error would overflow is invalid in the metrics; the per-sample and per-dimension
    errors drawn from the predictions leave it out too."""
    records = [{"id": "0", "prediction": [1e200, 0.2], "ground_truth": [0.0, 0.0]},
               {"id": "1", "prediction": [0.5, 0.25], "ground_truth": [0.0, 0.0]},
               {"id": "2", "prediction": None, "ground_truth": [0.0, 0.0]}]
    assert multinet_jax.score("openx", records)["invalid_by_overflow"]["ids"] == ["0"]
    np.testing.assert_array_equal(summary.valid_absolute_errors(records), [[0.5, 0.25]])


@pytest.mark.parametrize("name", domains.ALL_DOMAINS)
def test_every_headline_metric_has_a_known_unit(name):
    """A headline metric the plots do not know would get an axis labelled with its own name."""
    domain = domains.lookup(name)
    units = {metric: summary.metric_unit(domain, metric) for metric in domain.headline_metrics}
    assert all(unit.label != metric for metric, unit in units.items())
    if name == "bfcl":
        assert units["avg_turn_of_first_failure"].integer and units["exact_match_accuracy"] == plots.FRACTION


def test_zero_is_a_bar_of_height_zero_and_bfcl_turns_are_drawn():
    figure = summary.domain_figure(domains.lookup("bfcl"), BFCL_METRICS, [])
    fractions, turns, percent, per_turn = figure.axes
    assert fractions.get_xlim() == (0, 1) and _bar_labels(fractions) == ["0"]
    assert per_turn.get_ylim() == (0, 1) and per_turn.get_ylabel() == "fraction (0 to 1)"
    assert [bar.get_height() for bar in per_turn.patches] == [0, 0, 0] and _bar_labels(per_turn) == ["0", "0", "0"]
    _rendered(figure)
    assert _ticks(per_turn.xaxis) == [1, 2, 3] and turns.get_xlabel() == "turn"
    assert all(tick.is_integer() for tick in _ticks(turns.xaxis))
    _assert_readable_and_inside(figure)


def test_act2answer_axis_spans_0_to_1_with_the_legend_outside():
    metrics = multinet_jax.score("act2answer_probes", _probe_records(action_head=True))
    figure = summary.domain_figure(domains.lookup("act2answer"), metrics, [])
    per_category = figure.axes[-1]
    assert per_category.get_ylim() == (0, 1) and [tick.get_text() for tick in per_category.get_xticklabels()] == ["color", "shape"]
    assert _bar_labels(per_category) == ["0.5", "0.5", "1", "1"]  # text probe (always "left"), then action probe
    _assert_readable_and_inside(figure)
    _assert_legends_outside_the_data(figure)


def test_a_model_without_action_head_has_no_action_bars_and_no_nan():
    metrics = multinet_jax.score("act2answer_probes", _probe_records(action_head=False))
    assert metrics["action_probe"] == NO_ACTION_HEAD
    figure = summary.domain_figure(domains.lookup("act2answer"), metrics, [])
    per_category = figure.axes[-1]
    assert _bar_labels(per_category) == ["0.5", "0.5"] and "not applicable" in per_category.get_title()
    assert not [text for text in _texts(figure) if "NaN" in text.get_text()]


def _run(label: str, metrics: dict) -> cross_run_report.Run:
    result = cross_run_report.DomainResult("act2answer", "act2answer_probes", 12, metrics, "public", None)
    return cross_run_report.Run(label, {"model": label}, {"act2answer": result})


def test_report_labels_a_metric_a_run_did_not_report_as_the_table_does():
    runs = [_run("pi0", multinet_jax.score("act2answer_probes", _probe_records(action_head=True))),
            _run("paligemma", multinet_jax.score("act2answer_probes", _probe_records(action_head=False)))]
    figure = cross_run_report.domain_figure("act2answer", runs)
    text, text_invalid, action, invalid = (axes for axes in figure.axes if axes.get_visible())
    assert _bar_labels(text) == ["0.5", "0.5"] and _bar_labels(text_invalid) == ["0", "0"]
    assert _bar_labels(action) == ["1", plots.MISSING]
    assert _bar_labels(invalid) == ["0", plots.MISSING] and action.get_ylim() == (0, 1)
    assert cross_run_report.kind_tables(runs)[0].rows[1][3] == plots.MISSING  # the same mark as the table (action_probe_accuracy)
    _assert_readable_and_inside(figure)


def test_report_figure_of_continuous_actions_keeps_run_labels_and_legend_inside_the_image():
    results = [cross_run_report.DomainResult("openx_bimanual", "continuous", 4, {"avg_dataset_amae": amae, "action_success_rate": 0.0},
                                   "public", (0.1, amae, 0.3)) for amae in (0.25, 0.5)]
    runs = [cross_run_report.Run(label, {"model": "pi0"}, {"openx_bimanual": result})
            for label, result in zip(("a run with a long folder name", "another run"), results)]
    figure = cross_run_report.domain_figure("openx_bimanual", runs)
    mae, success, per_dimension = (axes for axes in figure.axes if axes.get_visible())
    assert mae.get_ylabel() == "mean absolute error (action units)" and mae.get_ylim()[0] == 0
    assert success.get_ylim() == (0, 100) and _bar_labels(success) == ["0", "0"]
    _rendered(figure)
    assert _ticks(per_dimension.xaxis) == [0, 1, 2]
    _assert_readable_and_inside(figure)
    _assert_legends_outside_the_data(figure)


def test_probing_plot_has_layer_ticks_peak_layers_and_legends_under_the_panels(tmp_path):
    curves = {"prefix_last": [0.55, 0.9, 0.7], "action_mean": [0.5, 0.6, 0.8]}
    tasks = {task: {"episodes": 40, **{stream: {"accuracy": values, "control_accuracy": [0.5, 0.48, 0.52],
                                                "null_peak_accuracy": [0.55, 0.6, 0.58],
                                                "peak_layer": int(np.argmax(values))} for stream, values in curves.items()}}
             for task in ("color", "shape")}
    result = {"chance": 0.5, "alpha": 0.05, "streams": list(curves), "tasks": tasks, "retention": 0.75,
              "retention_tasks": ["color"], "retention_excluded": {"shape": {"prefix_peak_accuracy": 0.5}}}
    layer_curves.plot(result, tmp_path / "probing.png")
    figure = layer_curves.figure(result)
    _rendered(figure)
    # the retention names what it averages: one task of two here
    assert " ".join(figure.get_suptitle().split()).endswith(
        "retention 0.75 over color (shape left out: prefix peak not above its permutation test at p <= 0.05)")
    for axes in figure.axes:
        assert _ticks(axes.xaxis) == [0, 1, 2] and axes.get_ylim() == (0, 1) and axes.get_xlabel() == "layer"
    labels = [text.get_text() for legend in figure.findobj(lambda a: a.__class__.__name__ == "Legend") for text in legend.get_texts()]
    assert labels == ["prefix_last: peak at layer 1", "action_mean: peak at layer 2"] * 2
    _assert_readable_and_inside(figure)
    _assert_legends_outside_the_data(figure)


def test_odinw_classes_are_counted_per_subset_never_pooled(tmp_path):
    """The demo's ODinW run, two subsets whose class 0 is "boat" in one and "CoW" in the other: the class
    distribution has a bar per subset's class, counting only that subset's records; with all 24 subsets' classes
    the figure widens so that no two class labels overlap."""
    eval_helpers.evaluate(tmp_path, ("odinw",))
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "odinw.jsonl")
    scored = json.loads((tmp_path / "odinw_metrics.json").read_text())["metrics"]
    odinw = domains.lookup("odinw")
    subsets = sorted({record[metrics.SUBSET_FIELD] for record in records})
    assert len(subsets) == 2
    labels, predicted, truth = summary._class_counts(odinw, scored, records)
    assert labels == [f"{subset}: {index}" for subset in subsets
                      for index in range(domains.ODINW_SUBSET_CLASSES[subset])] + ["invalid"]
    true_counts = Counter(f"{record['subset']}: {record['ground_truth']}" for record in records)
    predicted_counts = Counter("invalid" if record["prediction"] is None else f"{record['subset']}: {record['prediction']}"
                               for record in records)
    assert truth == [true_counts[label] for label in labels] and predicted == [predicted_counts[label] for label in labels]
    figure = summary.domain_figure(odinw, scored, records)
    assert [tick.get_text() for tick in figure.axes[-1].get_xticklabels()] == labels
    _assert_readable_and_inside(figure)

    every_subset = [{**records[0], "subset": subset, "num_options": classes, "ground_truth": classes - 1}
                    for subset, classes in domains.ODINW_SUBSET_CLASSES.items()]
    labels, _, _ = summary._class_counts(odinw, scored, every_subset)
    assert len(labels) == sum(domains.ODINW_SUBSET_CLASSES.values()) + 1
    figure = summary.domain_figure(odinw, scored, every_subset)
    renderer = _rendered(figure)
    boxes = [tick.get_window_extent(renderer) for tick in figure.axes[-1].get_xticklabels()]
    assert len(boxes) == len(labels) and all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))
    _assert_readable_and_inside(figure)
