"""Job files: every accepted format → tasks, comments, stable ids, duplicates and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distributed_something.errors import InputError
from distributed_something.jobs.model import MAX_MESSAGE_BYTES, Task, task_id_of
from distributed_something.jobs.parse import load_job_file, parse_job_text

# Modelled on the family's example job files (files/exampleJob.json of each repository).
DS_JOB: dict[str, Any] = {
    "_comment1": "Shared keys go to every task",
    "script": "projects/run.py",
    "output": "projects/output",
    "groups": [{"Plate": "P1", "Well": "A01"}, {"Plate": "P1", "Well": "A02"}],
}

DCP_JOB: dict[str, Any] = {
    "_comment1": "Paths in this file are relative to the root of your S3 bucket",
    "pipeline": "projects/analysis.cppipe",
    "data_file": "projects/load_data.csv",
    "input": "projects/images",
    "output": "projects/output",
    "output_structure": "Metadata_Plate-Metadata_Well",
    "_comment2": "The following groups are tasks, and each will be run in parallel",
    "groups": [
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01"},
        {"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A02"},
    ],
}

DCP_PRINT_GROUPS_JOB: dict[str, Any] = {
    **{k: v for k, v in DCP_JOB.items() if k != "groups"},
    "groups": [
        {"Metadata": {"Metadata_Plate": "Plate1", "Metadata_Well": "A01"}},
        {"Metadata": {"Metadata_Plate": "Plate1", "Metadata_Well": "A02"}},
    ],
}

DF_JOB: dict[str, Any] = {
    "_comment1": "Path of the output_file_location is relative to the root of your S3 bucket",
    "output_file_location": "projects/output/",
    "shared_metadata": {
        "input_file_location": "/home/ubuntu/bucket/projects/input",
        "image_size": "1024",
        "rows": "2",
        "columns": "2",
    },
    "groups": [{"Well": "A1", "Plate": "Plate_1"}, {"Well": "A2", "Plate": "Plate_1"}],
}

DOZC_JOB: dict[str, Any] = {
    "_comment_on_input": "Bucket and path in the bucket to the parent folder of your plates",
    "input_bucket": "SOURCE_BUCKET",
    "input_location": "projects/PROJECTNAME/BATCHNAME/images/",
    "path_to_metadata": "Images/Index.idx.xml",
    "output_bucket": "DESTINATION_BUCKET",
    "output_location": "projects/PROJECTNAME/BATCHNAME/images_zarr/",
    "upload_flags": False,
    "resolutions": False,
    "target-min-size": False,
    "additional_flags": False,
    "_comment_on_plates": "Each plate is an individual task and will be run in parallel",
    "plates": ["PLATEA", "PLATEB", "PLATEC"],
}


def write_json(tmp_path: Path, data: Any, name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def write_text(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def parse(data: Any) -> Any:
    return parse_job_text(json.dumps(data), source="job.json", suffix=".json")


def error_of(data: Any, *, text: str | None = None, suffix: str = ".json") -> InputError:
    with pytest.raises(InputError) as caught:
        parse_job_text(json.dumps(data) if text is None else text, source="my/job", suffix=suffix)
    assert caught.value.source == "my/job"
    return caught.value


# --- formats ------------------------------------------------------------------------------


def test_ds_groups_become_tasks_with_shared_keys(tmp_path: Path) -> None:
    path = write_json(tmp_path, DS_JOB)
    job = load_job_file(path)
    assert job.format == "ds"
    assert job.path == str(path)
    assert job.duplicates == []
    assert [t.body for t in job.tasks] == [
        {"script": "projects/run.py", "output": "projects/output", "group": group}
        for group in DS_JOB["groups"]
    ]
    assert all(t.group_key == "group" for t in job.tasks)
    assert [t.id for t in job.tasks] == [task_id_of(t.body) for t in job.tasks]
    assert job.tasks[0].id != job.tasks[1].id
    assert job.tasks[1].fields["Well"] == "A02"


@pytest.mark.parametrize("group", ["image_001.tif", 7, 2.5])
def test_string_and_number_groups(group: Any) -> None:
    job = parse({"tool": "x", "groups": [group]})
    assert job.tasks[0].body == {"tool": "x", "group": group}
    assert job.tasks[0].group == group


def test_dcp_string_metadata(tmp_path: Path) -> None:
    job = load_job_file(write_json(tmp_path, DCP_JOB))
    assert job.format == "dcp"
    assert len(job.tasks) == 2
    body = job.tasks[0].body
    # The message DCP's run.py sends: Metadata at the top level, string not parsed.
    assert body["Metadata"] == "Metadata_Plate=Plate1,Metadata_Well=A01"
    assert "group" not in body
    assert body["pipeline"] == "projects/analysis.cppipe"
    assert body["data_file"] == "projects/load_data.csv"
    assert body["output_structure"] == "Metadata_Plate-Metadata_Well"
    assert not any("_comment" in key for key in body)


def test_dcp_print_groups_metadata(tmp_path: Path) -> None:
    job = load_job_file(write_json(tmp_path, DCP_PRINT_GROUPS_JOB))
    assert job.format == "dcp"
    assert job.tasks[1].body["Metadata"] == {"Metadata_Plate": "Plate1", "Metadata_Well": "A02"}


def test_dcp_legacy_group_without_metadata_key_is_the_metadata_dict() -> None:
    # Legacy run.py sends such a group as the Metadata dict itself.
    job = parse({**DCP_JOB, "groups": [{"Metadata_Plate": "Plate1", "Metadata_Site": 1}]})
    assert job.format == "dcp"
    assert job.tasks[0].group == {"Metadata_Plate": "Plate1", "Metadata_Site": 1}


def test_dcp_is_recognised_by_pipeline() -> None:
    data = {"pipeline": "a.cppipe", "input": "in", "output": "out", "groups": [{"Metadata": "a=b"}]}
    assert parse(data).format == "dcp"


def test_dcp_is_recognised_by_data_file() -> None:
    # Without "pipeline" the file is still DCP, and so its missing pipeline is an error.
    data = {"data_file": "load.csv", "input": "in", "output": "out", "groups": [{"M": "a=b"}]}
    assert error_of(data).field == "pipeline"


@pytest.mark.parametrize("missing", ["pipeline", "input", "output"])
def test_dcp_required_keys(missing: str) -> None:
    data = {k: v for k, v in DCP_JOB.items() if k != missing}
    error = error_of(data)
    assert error.field == missing
    assert missing in error.fix


def test_dcp_input_may_be_empty_the_bucket_root_as_in_dcp() -> None:
    assert parse({**DCP_JOB, "input": ""}).format == "dcp"
    assert parse({**DCP_JOB, "input": "  "}).format == "dcp"


def test_dcp_data_file_is_optional() -> None:
    data = {k: v for k, v in DCP_JOB.items() if k != "data_file"}
    assert parse(data).format == "dcp"


@pytest.mark.parametrize(
    ("key", "value"), [("pipeline", 3), ("output", ""), ("data_file", ["a"]), ("input", 4)]
)
def test_dcp_shared_values_must_be_text(key: str, value: Any) -> None:
    assert error_of({**DCP_JOB, key: value}).field == key


@pytest.mark.parametrize(
    ("metadata", "bad"),
    [
        ("Metadata_Plate=Plate1,Metadata_Well", "'Metadata_Well'"),
        ("Metadata_Plate=Plate1;Metadata_Well=A01", "'Metadata_Plate=Plate1;Metadata_Well=A01'"),
        ("Metadata_Plate=Plate1,,Metadata_Well=A01", "''"),
        ("=Plate1", "'=Plate1'"),
        ("Metadata_Plate=", "'Metadata_Plate='"),
        ("a=b=c", "'a=b=c'"),
        ("Metadata_Plate=Plate1, Metadata_Well=A01", "' Metadata_Well=A01'"),
        ("Metadata_Plate = Plate1", "'Metadata_Plate = Plate1'"),
    ],
)
def test_dcp_metadata_string_pairs_are_checked(metadata: str, bad: str) -> None:
    groups = [{"Metadata": "Metadata_Plate=Plate1,Metadata_Well=A01"}, {"Metadata": metadata}]
    error = error_of({**DCP_JOB, "groups": groups})
    assert error.field == "groups[1].Metadata"
    assert bad in error.problem


@pytest.mark.parametrize(
    ("group", "field"),
    [
        ({"Metadata": ""}, "groups[0].Metadata"),
        ({"Metadata": 5}, "groups[0].Metadata"),
        ({"Metadata": {}}, "groups[0].Metadata"),
        ({"Metadata": {"Metadata_Well": ["A01"]}}, "groups[0].Metadata.Metadata_Well"),
        ({"Metadata": {"Metadata_Well": None}}, "groups[0].Metadata.Metadata_Well"),
        ({"metadata": "Metadata_Well=A01"}, "groups[0].metadata"),
        ("Metadata_Well=A01", "groups[0]"),
        ({}, "groups[0]"),
    ],
)
def test_dcp_bad_groups(group: Any, field: str) -> None:
    assert error_of({**DCP_JOB, "groups": [group]}).field == field


@pytest.mark.parametrize("marker", ["output_file_location", "shared_metadata"])
def test_df_is_recognised_by_either_marker(marker: str) -> None:
    data = {marker: DF_JOB[marker], "groups": DF_JOB["groups"]}
    job = parse(data)
    assert job.format == "df"
    assert job.tasks[0].body == {marker: DF_JOB[marker], "Metadata": DF_JOB["groups"][0]}


def test_df_example(tmp_path: Path) -> None:
    job = load_job_file(write_json(tmp_path, DF_JOB))
    assert job.format == "df"
    assert job.tasks[1].fields["Well"] == "A2"
    assert job.tasks[1].fields["shared_metadata"]["rows"] == "2"
    assert "_comment1" not in job.tasks[0].body


def test_dozc_plates(tmp_path: Path) -> None:
    job = load_job_file(write_json(tmp_path, DOZC_JOB))
    assert job.format == "dozc"
    assert [t.group for t in job.tasks] == ["PLATEA", "PLATEB", "PLATEC"]
    task = job.tasks[0]
    assert task.group_key == "plate"
    assert "group" not in task.body
    assert task.body["input_bucket"] == "SOURCE_BUCKET"
    assert task.body["upload_flags"] is False
    assert not any("_comment" in key for key in task.body)
    # The worker rebuilds the same task from the message body.
    again = Task.from_body(task.body_json())
    assert (again.group_key, again.id, again.group) == ("plate", task.id, "PLATEA")


def test_dozc_cannot_have_a_shared_group_key() -> None:
    assert error_of({**DOZC_JOB, "group": "x"}).field == "group"


def test_shared_key_named_like_the_element_key_is_rejected() -> None:
    assert error_of({**DS_JOB, "group": "shadowed"}).field == "group"
    assert error_of({**DOZC_JOB, "plate": "shadowed"}).field == "plate"


def test_csv_rows_become_groups(tmp_path: Path) -> None:
    text = 'Plate,Well,Note\nP1,A01,\nP1,A02,"has, comma"\n\n'
    job = load_job_file(write_text(tmp_path, text, "jobs.csv"))
    assert job.format == "csv"
    assert [t.body for t in job.tasks] == [
        {"group": {"Plate": "P1", "Well": "A01", "Note": ""}},
        {"group": {"Plate": "P1", "Well": "A02", "Note": "has, comma"}},
    ]
    assert job.tasks[0].fields["Well"] == "A01"


def test_csv_values_stay_text_and_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "JOBS.CSV"
    path.write_bytes("\ufeffSite,Value\n01,1.50\n".encode())
    job = load_job_file(path)
    assert job.format == "csv"
    assert job.tasks[0].group == {"Site": "01", "Value": "1.50"}


def test_csv_wrong_number_of_cells_names_the_line() -> None:
    text = 'a,b\n1,2\n"multi\nline",3\n4,5,6\n'
    error = error_of(None, text=text, suffix=".csv")
    assert error.field == "line 5"
    assert "3 cells" in error.problem
    assert "2 columns" in error.problem
    error = error_of(None, text="a,b\n1\n", suffix="csv")
    assert error.field == "line 2"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("a,b\n", "no rows"),
        ("a,,b\n1,2,3\n", "no name"),
        ("a,b,a\n1,2,3\n", "repeats"),
        ('a,b\n"1,2\n', "not valid CSV"),
    ],
)
def test_csv_errors(text: str, words: str) -> None:
    assert words in error_of(None, text=text, suffix=".csv").problem


# --- comments and ids ---------------------------------------------------------------------


def test_comments_are_dropped_at_every_level() -> None:
    data = {
        "_comment": "top",
        "my_comment_key": "also a comment",
        "settings": {"_comment": "nested", "deep": {"x_comment_y": 1, "keep": 2}},
        "items": [{"_comment": "in a list", "keep": 3}],
        "groups": [{"_comment": "in a group", "Well": "A01", "sub": {"_comment2": "", "k": 1}}],
    }
    body = parse(data).tasks[0].body
    assert body == {
        "settings": {"deep": {"keep": 2}},
        "items": [{"keep": 3}],
        "group": {"Well": "A01", "sub": {"k": 1}},
    }
    assert "_comment" not in json.dumps(body)


def test_repeated_comment_keys_are_allowed_but_other_repeats_are_not() -> None:
    text = '{"_comment": "a", "_comment": "b", "groups": [1]}'
    assert len(parse_job_text(text, source="j", suffix=".json").tasks) == 1
    error = error_of(None, text='{"output": "a", "output": "b", "groups": [1]}')
    assert error.field == "output"
    assert "twice" in error.problem


def test_ids_are_stable_across_files_key_order_and_comments(tmp_path: Path) -> None:
    first = write_json(tmp_path, DS_JOB, "first.json")
    reordered: dict[str, Any] = {
        "groups": [{"Well": "A02", "Plate": "P1"}, {"Well": "A01", "Plate": "P1"}],
        "output": "projects/output",
        "_comment_other": "different comment",
        "script": "projects/run.py",
    }
    second = write_json(tmp_path, reordered, "second.json")
    ids_first = [t.id for t in load_job_file(first).tasks]
    ids_second = [t.id for t in load_job_file(second).tasks]
    assert ids_first == list(reversed(ids_second))
    # A different shared value is a different task.
    changed = write_json(tmp_path, {**DS_JOB, "output": "elsewhere"}, "third.json")
    assert not set(ids_first) & {t.id for t in load_job_file(changed).tasks}


def test_duplicates_are_kept_once_and_reported() -> None:
    groups = [{"Well": "A01"}, {"Well": "A02"}, {"Well": "A01"}, {"Well": "A02"}, {"Well": "A01"}]
    job = parse({"tool": "t", "groups": groups})
    assert [t.group for t in job.tasks] == [{"Well": "A01"}, {"Well": "A02"}]
    assert [(d.index, d.first_index, d.task_id) for d in job.duplicates] == [
        (2, 0, job.tasks[0].id),
        (3, 1, job.tasks[1].id),
        (4, 0, job.tasks[0].id),
    ]


def test_duplicates_differing_only_in_comments_or_key_order() -> None:
    groups = [{"a": 1, "b": 2}, {"b": 2, "a": 1, "_comment": "again"}]
    job = parse({"groups": groups})
    assert len(job.tasks) == 1
    assert [(d.index, d.first_index) for d in job.duplicates] == [(1, 0)]


def test_csv_duplicates() -> None:
    job = parse_job_text("a\n1\n2\n1\n", source="j.csv", suffix=".csv")
    assert [t.group for t in job.tasks] == [{"a": "1"}, {"a": "2"}]
    assert [(d.index, d.first_index) for d in job.duplicates] == [(2, 0)]


# --- errors -------------------------------------------------------------------------------


def test_invalid_json_names_line_and_column() -> None:
    text = '{\n  "tool": "x",\n  "groups": [1, 2,]\n}'
    error = error_of(None, text=text)
    assert "line 3" in error.problem
    assert "column" in error.problem
    assert error.field is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # json's own words end in " at" for these: the position must follow them only once.
        ('{"groups": ["a\n', "Invalid control character at line 1, column 15"),
        ('{"groups": ["a', "Unterminated string starting at line 1, column 13"),
        (
            '{"groups": [1,]}',
            "Expecting value at line 1, column 15 (the comma on line 1 has nothing after it: "
            "JSON allows no trailing comma)",
        ),
        # The family's example job of 2019-2021 lacked the comma at the end of line 2 here:
        # json stops at the next line, so the line to mend is said.
        (
            '{"output": "out"\n  "groups": [1]}',
            "Expecting ',' delimiter at line 2, column 3 (line 1 lacks a comma at its end)",
        ),
        ('{"groups": [1 2]}', "Expecting ',' delimiter at line 1, column 15"),
    ],
)
def test_invalid_json_message_reads_as_one_line(tmp_path: Path, text: str, problem: str) -> None:
    path = write_text(tmp_path, text, "job.json")
    with pytest.raises(InputError) as caught:
        load_job_file(path)
    assert str(caught.value) == (
        f"{path}: is not valid JSON: {problem}. Fix: correct the JSON there (usually a missing "
        "comma or quote, or a trailing comma); a CSV job file must be named *.csv"
    )


def test_nan_and_overflowing_numbers_are_not_json() -> None:
    assert "NaN" in error_of(None, text='{"x": NaN, "groups": [1]}').problem
    assert "Infinity" in error_of(None, text='{"groups": [-Infinity]}').problem
    assert "1e400" in error_of(None, text='{"groups": [{"x": 1e400}]}').problem


@pytest.mark.parametrize(("data", "kind"), [([1, 2], "list"), ("x", "string"), (3, "number")])
def test_top_level_must_be_an_object(data: Any, kind: str) -> None:
    error = error_of(data)
    assert "top level" in error.problem
    assert kind in error.problem


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"tool": "x"}, "groups", "missing"),
        ({"tool": "x", "groups": []}, "groups", "empty"),
        ({"tool": "x", "plates": []}, "plates", "empty"),
        ({"tool": "x", "groups": {"a": 1}}, "groups", "not a list"),
        ({"groups": [1], "plates": ["P"]}, "plates", "both"),
        ({"groups": [{"a": 1}, [1, 2]]}, "groups[1]", "list"),
        ({"groups": [{"a": 1}, {"a": 2}, None]}, "groups[2]", "null"),
        ({"groups": [True]}, "groups[0]", "boolean"),
        ({"plates": ["P1", {"a": 1}, ["P3"]]}, "plates[2]", "list"),
    ],
)
def test_structure_errors(data: Any, field: str, words: str) -> None:
    error = error_of(data)
    assert error.field == field
    assert words in error.problem


def test_oversize_message_names_the_group_and_size() -> None:
    big = "x" * (MAX_MESSAGE_BYTES - 100)
    data = {"tool": "t", "groups": [{"a": "small"}, {"a": big + "y" * 200}]}
    error = error_of(data)
    assert error.field == "groups[1]"
    size = len(json.dumps({"tool": "t", "group": {"a": big + "y" * 200}}, separators=(",", ":")))
    assert f"{size:,}" in error.problem
    assert "storage" in error.fix


def test_message_at_the_limit_is_accepted() -> None:
    overhead = len('{"group":{"a":""}}')
    data = {"groups": [{"a": "x" * (MAX_MESSAGE_BYTES - overhead)}]}
    assert len(parse(data).tasks[0].body_json().encode()) == MAX_MESSAGE_BYTES


def test_oversize_counts_utf8_bytes() -> None:
    overhead = len('{"group":{"a":""}}')
    # Half as many characters as the limit allows, but each is 3 bytes in UTF-8.
    data = {"groups": [{"a": "€" * ((MAX_MESSAGE_BYTES - overhead) // 2)}]}
    assert error_of(data).field == "groups[0]"


@pytest.mark.parametrize(
    ("data", "suffix", "field"),
    [
        ({"groups": [{"a": "ok"}, {"a": "b\uffff"}]}, ".json", "groups[1]"),
        ({"groups": [{"a\ufffe": "b"}]}, ".json", "groups[0]"),
        ({"note": "x\ufffe", "groups": [{"a": "b"}]}, ".json", "note"),
        ("a\nok\nb\uffff\n", ".csv", "rows[1]"),
    ],
)
def test_noncharacters_sqs_refuses_are_refused_naming_where(
    data: Any, suffix: str, field: str
) -> None:
    """U+FFFE and U+FFFF, which JSON text without ASCII escapes keeps as they are and SQS
    refuses in a message body (moto took them)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    error = error_of(None, text=text, suffix=suffix)
    assert error.field == field
    assert "U+FFFE or U+FFFF" in error.problem and "U+FFFD" in error.fix
    if not isinstance(data, str):  # written as JSON escapes (\uFFFF) too
        escaped = json.dumps(data).replace("\\uffff", "\\uFFFF")
        assert "\\uFFFF" in escaped or "\\ufffe" in escaped
        assert error_of(None, text=escaped, suffix=suffix).field == field
    fixed = text.replace("\uffff", "\ufffd").replace("\ufffe", "\ufffd")
    assert parse_job_text(fixed, source="j", suffix=suffix).tasks


def test_load_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(InputError) as caught:
        load_job_file(missing)
    assert caught.value.source == str(missing)
    assert "does not exist" in caught.value.problem

    with pytest.raises(InputError) as caught:
        load_job_file(tmp_path)
    assert "folder" in caught.value.problem

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("Well\nA\xe901\n".encode("latin-1"))
    with pytest.raises(InputError) as caught:
        load_job_file(latin1)
    assert "UTF-8" in caught.value.problem


def test_the_suffix_decides_csv(tmp_path: Path) -> None:
    # The same text is a valid CSV job named .csv and invalid JSON named .json.
    text = "Plate,Well\nP1,A01\n"
    assert load_job_file(write_text(tmp_path, text, "job.csv")).format == "csv"
    with pytest.raises(InputError) as caught:
        load_job_file(write_text(tmp_path, text, "job.json"))
    assert "not valid JSON" in caught.value.problem
    assert "*.csv" in caught.value.fix


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"groups": [{"a": 1}]}, "group"),
        (DCP_JOB, "Metadata"),
        (DF_JOB, "Metadata"),
        ({"input_bucket": "b", "plates": ["P1"]}, "plate"),
    ],
)
def test_worker_reads_back_the_same_task_from_the_message(data: dict[str, Any], key: str) -> None:
    task = parse(data).tasks[0]
    again = Task.from_body(task.body_json())
    assert (again.group_key, again.id, again.group) == (key, task.id, task.group)


@pytest.mark.parametrize(
    ("job", "field", "kind"),
    [
        (
            {"groups": [{"name": "a"}, {"url": "https://jobuser:JOBPASS123@example.invalid/d"}]},
            "groups[1].url",
            "a URL with a password in it",
        ),
        (
            {"groups": [{"key": "s3://AKIAIOSFODNN7EXAMPLE@bucket/x"}]},
            "groups[0].key",
            "an AWS access key id",
        ),
        (
            {"token": "https://h.invalid/x?X-Amz-Signature=deadbeef", "groups": [{"n": 1}]},
            "token",
            "a presigned URL",
        ),
        (
            {
                "pipeline": "p.cppipe",
                "groups": [{"Metadata": "Metadata_Plate=P1"}],
                "output": "o",
                "input": "i",
                "data_file": "d.csv",
                "note": "https://u:secretpw@h/",
            },
            "note",
            "a URL with a password in it",
        ),
    ],
)
def test_a_credential_in_a_job_value_is_refused_naming_where_not_what(
    job: dict[str, Any], field: str, kind: str
) -> None:
    # A job value is copied into the task's message, its log's header (`ds: argv …`), its
    # records, the reports and ds's own errors: a credential in one was everywhere.
    text = json.dumps(job)
    with pytest.raises(InputError) as caught:
        parse_job_text(text, source="job.json", suffix=".json")
    error = caught.value
    assert error.field == field and kind in error.problem
    assert "take it out of the job file" in error.fix
    said = str(error)
    assert "JOBPASS123" not in said and "AKIAIOSFODNN7EXAMPLE" not in said
    assert "deadbeef" not in said and "secretpw" not in said


def test_paths_hashes_and_plain_values_are_no_credentials() -> None:
    job = {
        "groups": [
            {"path": "project/images/plate1/A01_s1_w1.tif", "sha": "a" * 40},
            {"path": "s3://bucket/a%20b.tif", "commit": "0123456789abcdef0123456789abcdef01234567"},
            {"url": "https://example.invalid/x?page=2&size=10"},
        ]
    }
    assert len(parse_job_text(json.dumps(job), source="job.json", suffix=".json").tasks) == 3
