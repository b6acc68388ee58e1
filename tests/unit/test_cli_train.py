import json
import subprocess
import sys
from pathlib import Path

from forecast.data import SalesData, write_csv
from forecast.registry import Registry


def test_train_command_registers_promotes_and_prints_the_smape_line(tmp_path: Path, small_data: SalesData) -> None:
    csv = tmp_path / "train.csv"
    write_csv(small_data, csv)
    registry_dir = tmp_path / "registry"
    command = [sys.executable, "-m", "forecast", "--registry", str(registry_dir), "train", "--data", str(csv)]
    result = subprocess.run([*command, "--rounds", "20"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    *_, last, coverage = result.stdout.strip().splitlines()
    assert last.startswith("holdout SMAPE: model=")
    assert coverage.startswith("interval coverage on the newest backtest cutoff (daily): 50%: ")
    assert " baseline=" in last
    model, baseline = (float(part.split("=")[1]) for part in last.removeprefix("holdout SMAPE: ").split())
    assert model < baseline
    registry = Registry(registry_dir)
    assert registry.aliases() == {"production": "v1"}
    assert registry.metadata("v1")["data"]["rows"] == len(small_data)
    card = subprocess.run([*command[:5], "registry", "show", "v1"], capture_output=True, text=True, check=True)
    intervals = json.loads(card.stdout)["intervals"]
    assert set(intervals) == {"method", "origins", "coverage", "errors"}  # the summary: the tables are long
    assert set(intervals["coverage"]["day/series/1"]) == {"50", "80", "90", "95", "99"}
    full = subprocess.run(
        [*command[:5], "registry", "show", "v1", "--full"], capture_output=True, text=True, check=True
    )
    assert "week/all/7" in json.loads(full.stdout)["intervals"]["cells"]

    again = subprocess.run([*command, "--if-empty"], capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0
    assert "not training" in again.stdout
    assert registry.versions() == ["v1"]


def test_a_named_model_trains_on_the_stores_and_items_asked_and_knows_only_those(
    tmp_path: Path, small_data: SalesData
) -> None:
    csv = tmp_path / "train.csv"
    write_csv(small_data, csv)
    command = [sys.executable, "-m", "forecast", "--registry", str(tmp_path / "registry"), "train", "--data", str(csv)]
    family = ["--model", "store2-family1", "--stores", "2", "--items", "1-2,4", "--rounds", "10"]
    result = subprocess.run([*command, *family], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    named = Registry(tmp_path / "registry", "store2-family1")
    assert named.aliases() == {"production": "v1"}
    assert named.metadata("v1")["domain"] == {"stores": [2], "items": [1, 2, 4]}
    assert not (tmp_path / "registry" / "aliases").exists()  # the default model untouched

    nothing = subprocess.run([*command, "--stores", "9"], capture_output=True, text=True, timeout=300, check=False)
    assert nothing.returncode == 1
    assert "no rows of" in nothing.stderr
    bad = subprocess.run([*command, "--items", "1-x"], capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 2
    assert "'1-x' is not a list like 1-5,8" in bad.stderr
