"""Progress and Compare: a prepared run store's metrics, bytes, FLOPs and dCor as the pages show them."""

from __future__ import annotations

from dashboard import runs
from medsplit.runstore import RunStore


def _last(store_dir, task="diagnosis", split="val", name="auc") -> float:
    rows = [r for r in RunStore(store_dir, readonly=True).rows("metrics")
            if (r["task"], r["split"], r["name"]) == (task, split, name)]
    return max(rows, key=lambda r: r["epoch"])["value"]


def test_a_finished_runs_metrics_are_displayed(app, runs_root):
    at = app(page="progress", run="vertical")
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="run").value == "vertical"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "completed" and metrics["Preset"] == "vertical"
    assert metrics["Epochs"] == "2 / 2" and metrics["NoPeek α"] == "0.5"
    assert metrics["val auc"] == f"{_last(runs_root / 'vertical'):.4f}"
    assert metrics["train loss"] == f"{_last(runs_root / 'vertical', split='train', name='loss'):.4f}"
    # loss, scores, steps/s, FLOPs, bytes over time, dCor
    assert len(at.get("vega_lite_chart")) == 6
    headers = [h.value for h in at.subheader]
    assert "Distance correlation of each cut with its raw input (NoPeek α = 0.5)" in headers
    nodes = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert dict(zip(nodes["party"], nodes["status"])) == {"imaging": "finished", "ehr": "finished",
                                                          "server": "finished"}
    flops = next(d.value for d in at.dataframe if "MFLOP / step" in d.value.columns)
    assert set(flops.loc[flops["role"] == "site", "party"]) == {"imaging", "ehr"}


def test_node_status_follows_the_events(app_in, new_store, tmp_path):
    store = new_store(tmp_path / "live")
    for party, status in [("hospital", "connected"), ("server", "connected"), ("hospital", "training"),
                          ("server", "training"), ("hospital", "down"), ("hospital", "resumed"), ("server", "down")]:
        store.log_event(party, status, "connection reset by /data/site/12345678/x" if status == "down" else "")
    store.log_metrics(1, 10, {"diagnosis": {"loss": 0.7}}, "train")
    at = app_in(tmp_path, page="launch", run="live")
    at.run()
    assert not at.exception
    nodes = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert dict(zip(nodes["party"], nodes["status"])) == {"hospital": "resumed", "server": "down"}
    assert "12345678" not in nodes.to_csv() and "<path>" in nodes.to_csv()  # details lose their paths
    at.sidebar.radio[0].set_value("Progress").run()
    assert any("live: re-read every" in c.value for c in at.caption)  # a live run is refreshed
    store.set_info(status="completed", ended=store.info()["started"] + 5)
    at.run()
    assert not any("live" in c.value for c in at.caption)


def test_compare_overlays_runs_and_tabulates_final_metrics(app, runs_root):
    at = app(page="compare")
    at.run()
    assert not at.exception and not at.error
    assert sorted(at.multiselect(key="c_runs").value) == ["vanilla", "vertical"]
    assert at.selectbox(key="c_series").value == "val auc"
    assert len(at.get("vega_lite_chart")) == 2  # the chosen curve and val loss, one line per run
    table = at.dataframe[0].value.set_index("run")
    for name in ("vanilla", "vertical"):
        assert table.loc[name, "diagnosis val auc"] == round(_last(runs_root / name), 4)
        assert table.loc[name, "epochs"] == 2
    assert table.loc["vertical", "nopeek"] == 0.5
    at.multiselect(key="c_runs").unselect("vanilla").run()
    assert list(at.dataframe[0].value["run"]) == ["vertical"]


def test_aggregates_from_a_run_store(runs_root):
    run = runs.load_run(runs_root / "vanilla")
    sps = runs.steps_per_second(run.metrics, run.info)
    assert list(sps["epoch"]) == [1, 2] and (sps["steps/s"] > 0).all()
    over_time = runs.bytes_over_time(run.traffic, run.info)
    assert {"hospital sent", "server received"} <= set(over_time.columns)
    assert over_time["hospital sent"].is_monotonic_increasing
    sent = run.traffic[(run.traffic["party"] == "hospital") & (run.traffic["direction"] == "sent")]
    assert over_time["hospital sent"].iloc[-1] == sent[sent["step"] == sent["step"].max()]["bytes"].sum() / 1e6
