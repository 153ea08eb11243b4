"""A tiny override of the awd-ptb preset trains a few steps end to end (every AWD regulariser on,
NT-ASGD armed, the last layer narrower and tied to the embedding, as the paper's 1150-1150-400
stack), from the command line, and the run loads for inference: evaluated, adapted, sampled."""

import json

from rnnlab.runs.load import load_text_model


def test_tiny_awd_ptb_trains_and_evaluates(run_cli, fox_file, tmp_path):
    out = tmp_path / "awd"
    code, stdout, err = run_cli(
        "train", "--preset", "awd-ptb", "--text", fox_file, "--level", "char",
        "--layers", "3", "--hidden", "12", "--last-hidden", "6", "--embed", "6", "--batch-size", "4",
        "--bptt", "8", "--max-steps", "6", "--epochs", "2", "--threads", "1",
        "--out", out, "--no-progress", "--no-sample", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["steps"] == 6 and summary["test"]["perplexity"] < 1000  # finite, evaluated
    saved = json.loads((out / "run.json").read_text())
    assert saved["model"]["weight_drop"] == 0.5 and saved["optim"]["asgd"] == "nt"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert all(r["lr"] <= 30.0 for r in rows)
    assert saved["model"]["last_hidden_size"] == 6
    model, vocab, _ = load_text_model(out)  # inference builds the same model, no trainer
    assert model.config.weight_drop == 0.5 and model.config.dropout_hidden == 0.3
    assert model.config.layer_sizes() == [12, 12, 6] and model.decoder.weight.shape[1] == 6
    code, stdout, err = run_cli("eval", out, "--threads", "1")
    assert code == 0, err
    code, stdout, err = run_cli("eval", out, "--threads", "1", "--cache", "--dynamic")
    assert code == 0, err
    code, stdout, err = run_cli("sample", out, "--length", "20")
    assert code == 0 and stdout.strip(), err
