"""Progress and Compare: live steps within the first epoch (counter, steps/s, ETA, smoothed loss, each transfer
against the plan, undeclared kinds flagged), readable charts, node heartbeats and rejoins, final metrics."""

from __future__ import annotations

import json

from dashboard import runs
from medsplit.runstore import RunStore

DECLARED = [{"edge": "hospital.encoder->server.head", "kind": "activation", "src": "hospital", "dst": "server",
             "bytes": 4 * 8 * 32},
            {"edge": "hospital.encoder->server.head", "kind": "gradient", "src": "server", "dst": "hospital",
             "bytes": 4 * 8 * 32},
            {"edge": "labels:diagnosis:hospital->server", "kind": "label", "src": "hospital", "dst": "server",
             "bytes": 4 * 8}]


def _last(store_dir, task="diagnosis", split="val", name="auc") -> float:
    rows = [r for r in RunStore(store_dir, readonly=True).rows("metrics")
            if (r["task"], r["split"], r["name"]) == (task, split, name)]
    return max(rows, key=lambda r: r["epoch"])["value"]


def _flows(steps: int, extra: list[dict] = ()) -> list[dict]:  # type: ignore[assignment]
    edge = "hospital.encoder->server.head"
    return [{"src": "hospital", "dst": "server", "edge": edge, "kind": "activation", "phase": "train", "count": steps,
             "bytes": steps * 4 * 8 * 32},
            {"src": "server", "dst": "hospital", "edge": edge, "kind": "gradient", "phase": "train", "count": steps,
             "bytes": steps * 4 * 8 * 32}, *extra]


def _charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _marks(spec: dict) -> set[str]:
    return {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]}


def test_a_finished_runs_metrics_are_displayed(app, runs_root):
    at = app(page="progress", run="vertical")
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="run").value == "vertical"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"].endswith("completed") and metrics["Preset"] == "vertical"
    assert metrics["Epochs done"] == "2 / 2" and metrics["NoPeek α"] == "0.5"
    assert metrics["val auc"] == f"{_last(runs_root / 'vertical'):.4f}"
    assert metrics["train loss"] == f"{_last(runs_root / 'vertical', split='train', name='loss'):.4f}"
    assert metrics["Epoch"] == "2 / 2" and metrics["Step"].split(" / ")[0] == metrics["Step"].split(" / ")[1]
    # smoothed loss per step, loss and scores per epoch, steps/s, FLOPs, bytes per transfer, dCor
    assert len(at.get("vega_lite_chart")) == 7
    headers = [h.value for h in at.subheader]
    assert "Distance correlation of each cut with its raw input (NoPeek α = 0.5)" in headers
    nodes = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert dict(zip(nodes["party"], nodes["status"], strict=True)) == {"imaging": "finished", "ehr": "finished",
                                                          "server": "finished"}
    assert list(nodes["rejoins"]) == [0, 0, 0] and "–" not in list(nodes["last heard"])
    flops = next(d.value for d in at.dataframe if "MFLOP / step" in d.value.columns)
    assert set(flops.loc[flops["role"] == "site", "party"]) == {"imaging", "ehr"}
    transfers = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert set(transfers["verdict"]) <= {"as planned", "declared"}  # what crossed is what the plan says


def test_steps_are_live_within_the_first_epoch(app_in, new_store, tmp_path):
    store = new_store(tmp_path / "live")
    store.set_plan(DECLARED, 8, 40)
    for done in (5, 10):
        store.log_step(1, done, 40, done, {"diagnosis": 0.70 - done / 1000}, _flows(done), ["hospital", "server"])
    at = app_in(tmp_path, page="progress", run="live")
    at.run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epoch"] == "1 / 3" and metrics["Step"] == "10 / 40"
    rate = float(metrics["Steps / s"])
    assert rate > 0 and metrics["ETA"] != "–"
    assert metrics["Loss (latest)"] == "0.6900"
    assert any("live: re-read every" in c.value for c in at.caption)
    texts = [c.value for c in at.caption]
    assert not any("nothing has crossed yet" in t or "No epoch has finished" in t for t in texts)
    transfers = next(d.value for d in at.dataframe if "verdict" in d.value.columns).set_index("kind")
    assert transfers.loc["activation", "tensors"] == 10 and transfers.loc["activation", "verdict"] == "as planned"
    assert transfers.loc["activation", "kB / tensor"] == transfers.loc["activation", "plan kB / tensor"] == 1.02
    assert transfers.loc["label", "verdict"] == "not measured yet"
    loss = next(s for s in _charts(at) if "training step" in json.dumps(s))
    assert "smoothed" in json.dumps(loss)
    store.log_step(1, 25, 40, 25, {"diagnosis": 0.6}, _flows(25), ["server"])
    at.run()
    assert {m.label: m.value for m in at.metric}["Step"] == "25 / 40"  # the counter moves within epoch 1


def test_a_kind_the_plan_does_not_declare_is_an_alert(app_in, new_store, tmp_path):
    store = new_store(tmp_path / "leaky")
    store.set_plan(DECLARED, 8, 40)
    raw = {"src": "hospital", "dst": "server", "edge": "hospital.encoder->server.head", "kind": "prediction",
           "phase": "train", "count": 1, "bytes": 1024}
    store.log_step(1, 3, 40, 3, {"diagnosis": 0.7}, _flows(3, [raw]), ["hospital"])
    at = app_in(tmp_path, page="progress", run="leaky")
    at.run()
    alert = [e.value for e in at.error if "does not declare" in e.value]
    assert alert and "prediction hospital → server" in alert[0]
    transfers = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert "NOT DECLARED by the plan" in set(transfers["verdict"])


def test_charts_are_readable(app, runs_root):
    at = app(page="progress", run="vanilla")
    at.run()
    specs = _charts(at)
    lines = [s for s in specs if "line" in _marks(s)]
    for spec in lines:
        y = spec["layer"][0]["encoding"]["y"]
        assert y["scale"]["zero"] is False  # fitted to the data: a loss of 0.55-0.7 is not flat
        colours = spec["layer"][0]["encoding"]["color"]["scale"]
        assert len(set(colours["range"])) == len(colours["domain"])  # a colour per line
    epochwise = [s for s in lines if '"epoch"' in json.dumps(s["layer"][0]["encoding"]["x"])]
    assert epochwise and all("point" in _marks(s) for s in epochwise)  # markers: a one-epoch run is visible
    loss = next(s for s in epochwise if s["layer"][0]["encoding"]["y"]["title"] == "loss")
    assert loss["layer"][0]["encoding"]["strokeDash"]["scale"]["range"] == [[1, 0], [6, 3]]  # val dashed
    series = next(s for s in lines if s["layer"][0]["encoding"]["y"]["title"] == "MB (cumulative)")
    names = series["layer"][0]["encoding"]["color"]["scale"]["domain"]
    assert names and all(" → " in n for n in names) and not any("received" in n for n in names)
    assert len(names) == len(set(names))  # one line per transfer, each tensor counted once


def test_node_status_heartbeats_and_rejoins(app_in, new_store, tmp_path):
    store = new_store(tmp_path / "live")
    for party, status in [("hospital", "connected"), ("server", "connected"), ("hospital", "training"),
                          ("server", "training"), ("hospital", "down"), ("hospital", "resumed"), ("hospital", "down"),
                          ("hospital", "resumed"), ("server", "down")]:
        store.log_event(party, status, "connection reset by /data/site/12345678/x" if status == "down" else "")
    store.heard(["hospital"], 12)
    store.log_metrics(1, 10, {"diagnosis": {"loss": 0.7}}, "train")
    at = app_in(tmp_path, page="launch", run="live")
    at.run()
    assert not at.exception
    nodes = next(d.value for d in at.dataframe if "status" in d.value.columns).set_index("party")
    assert nodes.loc["hospital", "status"] == "resumed" and nodes.loc["server", "status"] == "down"
    assert nodes.loc["hospital", "rejoins"] == 2 and nodes.loc["server", "rejoins"] == 0
    assert nodes.loc["hospital", "last heard"].endswith("s ago") and nodes.loc["server", "last heard"] == "–"
    assert "12345678" not in nodes.to_csv() and "<path>" in nodes.to_csv()  # details lose their paths
    at.sidebar.radio[0].set_value("Progress").run()
    assert any("live: re-read every" in c.value for c in at.caption)  # a live run is refreshed
    store.set_status("stopped", "stopped by SIGTERM")
    at.run()
    assert not any("live" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Status"].endswith("stopped")
    assert any("stopped by SIGTERM" in c.value for c in at.caption)


def test_compare_overlays_runs_and_tabulates_final_metrics(app, runs_root):
    at = app(page="compare")
    at.run()
    assert not at.exception and not at.error
    assert sorted(at.multiselect(key="c_runs").value) == ["vanilla", "vertical"]
    assert at.selectbox(key="c_series").value == "val auc"
    charts = [s for s in _charts(at) if "layer" in s]  # the metric and loss charts; then privacy against AUC
    assert len(charts) == 2 and all("point" in _marks(s) for s in charts)  # one line and markers per run
    assert len(_charts(at)) == 3 and any(h.value == "Privacy against AUC" for h in at.subheader)
    table = at.dataframe[0].value.set_index("run")
    for name in ("vanilla", "vertical"):
        assert table.loc[name, "diagnosis val auc"] == round(_last(runs_root / name), 4)
        assert table.loc[name, "epochs"] == 2 and table.loc[name, "status"] == "completed"
    assert table.loc["vertical", "nopeek"] == 0.5
    at.multiselect(key="c_runs").unselect("vanilla").run()
    assert list(at.dataframe[0].value["run"]) == ["vertical"]


def test_aggregates_from_a_run_store(runs_root):
    run = runs.load_run(runs_root / "vanilla")
    sps = runs.steps_per_second(run.metrics, run.info)
    assert list(sps["epoch"]) == [1, 2] and (sps["steps/s"] > 0).all()
    over_time = runs.bytes_over_time(run)
    assert {"hospital → server activation", "server → hospital gradient"} <= set(over_time.columns)
    assert over_time["hospital → server activation"].is_monotonic_increasing
    sent = run.traffic[(run.traffic["party"] == "hospital") & (run.traffic["direction"] == "sent")]
    last = sent[sent["step"] == sent["step"].max()]
    assert over_time["hospital → server activation"].iloc[-1] * 1e6 == last[last["kind"] == "activation"]["bytes"].sum()
    live = runs.live_steps(run)
    assert live["epoch"] == 2 and live["done"] == live["total"] and live["train_steps"] == live["of"]
