"""report.html's tables read the run's CSVs: numbers as numbers, learning rates as written."""
from frpo_bench.results.html_report import read_csv_rows


def test_csv_tables_keep_learning_rates_as_written(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("attack_lr,worst_lr,worst_mean,n_attack_cells,metric\n1e-05,0.0001,0.025,4,benign_refusal\n")
    (row,) = read_csv_rows(path)
    assert row == {"attack_lr": "1e-05", "worst_lr": "0.0001", "worst_mean": 0.025, "n_attack_cells": 4,
                   "metric": "benign_refusal"}
