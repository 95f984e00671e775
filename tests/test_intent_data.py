"""Intent example formats (training/pipelines/intent_data.py): CSV, CLINC150 JSON and Rasa NLU YAML read and
written, forgiving of BOMs, CRLF and blank lines, and naming the line or row of anything they refuse."""

import json
import re
from collections import Counter

import pytest
import yaml

from training.pipelines.intent_data import (
    OUT_OF_SCOPE,
    IntentDataError,
    IntentRecord,
    format_for_filename,
    read_any,
    read_clinc,
    read_clinc_records,
    read_csv,
    read_rasa_yaml,
    write_any,
    write_clinc,
    write_csv,
    write_rasa_yaml,
)

# Texts a writer must quote or escape in some format: commas, quotes, colons, "#", a leading dash, other scripts.
RECORDS = [
    IntentRecord("what's new in science, today?", "latest_news"),
    IntentRecord('find "the tram" story', "search_topic"),
    IntentRecord("note: # not a comment", "search_topic"),
    IntentRecord("- starts with a dash", "help"),
    IntentRecord("привет, как дела", "greeting"),
    IntentRecord("新闻 👋 yes", "greeting"),
    IntentRecord("what's the weather tomorrow", OUT_OF_SCOPE),
    IntentRecord("[not] {markup}", "yes"),
]

CLINC = {
    "oos_val": [["a show on broadway", "oos"]],
    "val": [["how do i say hello in french", "translate"]],
    "train": [["what expression would i use to say i love you in italian", "translate"], ["transfer $10", "transfer"]],
    "oos_test": [["how many onions do i have on hand", "oos"]],
    "test": [["send money to sam", "transfer"]],
    "oos_train": [["how much is an overdraft fee", "oos"]],
}

RASA = """version: "3.1"

nlu:
- intent: greet
  examples: |
    - hey
    - hello [Anna](person) from [Port Ellery]{"entity": "place", "value": "port-ellery"}

    - good   morning
- synonym: port-ellery
  examples: |
    - Port Ellery
- regex: zipcode
  examples: |
    - [0-9]{5}
- intent: ask_news
  examples:
  - text: |
      what's new
    metadata:
      sentiment: neutral
  - any news today
"""


# --- CSV ------------------------------------------------------------------------------------------------


def test_csv_forgives_bom_crlf_blank_lines_and_extra_columns():
    text = '\ufeffid,text,label\r\n\r\n1,"hello,  there",greeting\r\n2,"two\r\nlines",help\r\n\r\n3,bye,oos\r\n'
    assert read_csv(text) == [
        IntentRecord("hello, there", "greeting"),
        IntentRecord("two lines", "help"),
        IntentRecord("bye", OUT_OF_SCOPE),
    ]


def test_csv_with_other_column_names():
    text = "utterance,intent\nhi,greeting\n"
    assert read_csv(text, text_column="utterance", label_column="intent") == [IntentRecord("hi", "greeting")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("\r\n\r\n", "empty"),
        ("txt,label\nhi,greeting\n", "line 1: no column 'text'"),
        ("text,intent\nhi,greeting\n", "no column 'label' (the header has 'text', 'intent')"),
        ("text,label\nhi,greeting\n   ,help\n", "CSV line 3: the text is empty"),
        ("text,label\nhi,greeting\nhello,\n", "CSV line 3: the label is empty"),
        ("label,text\ngreeting\n", "CSV line 2: 1 cells"),
    ],
)
def test_csv_errors_name_the_line(text, message):
    with pytest.raises(IntentDataError, match=re.escape(message)):
        read_csv(text)


# --- CLINC150 -------------------------------------------------------------------------------------------


def test_clinc_reads_every_split_and_maps_oos():
    splits = read_clinc(json.dumps(CLINC))
    assert splits.train == [
        IntentRecord("what expression would i use to say i love you in italian", "translate"),
        IntentRecord("transfer $10", "transfer"),
    ]
    assert splits.val == [IntentRecord("how do i say hello in french", "translate")]
    assert splits.test == [IntentRecord("send money to sam", "transfer")]
    assert splits.oos_train == [IntentRecord("how much is an overdraft fee", OUT_OF_SCOPE)]
    assert [r.label for r in splits.oos_val + splits.oos_test] == [OUT_OF_SCOPE, OUT_OF_SCOPE]
    assert len(read_clinc_records(json.dumps(CLINC))) == 7
    # A split may be missing (data_small has all six, but a hand-made file may not).
    assert read_clinc(json.dumps({"train": [["hi", "greeting"]]})).oos_test == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "JSON line 1 column 2"),
        ('{"train": [["hi", "greeting"]],\n "val": [["x" "y"]]}', "JSON line 2"),
        ("[]", "expected an object with the lists train, val"),
        ('{"data": []}', "expected an object"),
        ('{"train": {"hi": "greeting"}}', "'train': expected a list"),
        ('{"train": [["hi", "greeting"], ["alone"]]}', "train[1] (row 2): expected a [text, label] pair"),
        ('{"val": [["hi", 3]]}', "val[0] (row 1): text and label must be strings"),
        ('{"test": [["  ", "greeting"]]}', "test[0] (row 1): the text is empty"),
    ],
)
def test_clinc_errors_name_the_row(text, message):
    with pytest.raises(IntentDataError, match=re.escape(message)):
        read_clinc(text)


def test_write_clinc_puts_everything_in_train_and_out_of_scope_in_oos_train():
    data = json.loads(write_clinc(RECORDS))
    assert set(data) == {"train", "val", "test", "oos_train", "oos_val", "oos_test"}
    assert data["oos_train"] == [["what's the weather tomorrow", "oos"]]
    assert len(data["train"]) == len(RECORDS) - 1
    assert data["val"] == data["test"] == data["oos_val"] == data["oos_test"] == []


# --- Rasa NLU YAML --------------------------------------------------------------------------------------


def test_rasa_reads_intents_strips_entities_and_skips_other_items():
    assert read_rasa_yaml("\ufeff" + RASA.replace("\n", "\r\n")) == [
        IntentRecord("hey", "greet"),
        IntentRecord("hello Anna from Port Ellery", "greet"),
        IntentRecord("good morning", "greet"),
        IntentRecord("what's new", "ask_news"),
        IntentRecord("any news today", "ask_news"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("version: '3.1'\n", "expected an 'nlu:' list"),
        ("nlu: [\n", "line 2: not valid YAML"),
        ("nlu:\n- intent: greet\n", "line 2: intent 'greet' has no 'examples:'"),
        ("nlu:\n- intent: greet\n  examples: |\n    - hi\n    hello\n", "line 5: intent 'greet': write examples"),
        ("nlu:\n- intent: ''\n  examples: |\n    - hi\n", "line 4: the label is empty"),
        ("nlu:\n- intent: greet\n  examples: |\n    - hi\n    -  \n", "line 5: the text is empty"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_rasa_errors_name_the_line(text, message):
    with pytest.raises(IntentDataError, match=re.escape(message)):
        read_rasa_yaml(text)


def test_rasa_output_is_plain_rasa_nlu_data():
    data = yaml.safe_load(write_rasa_yaml(RECORDS))
    assert data["version"] == "3.1"
    # A label YAML would read as a boolean stays a string.
    assert [item["intent"] for item in data["nlu"]] == [
        "latest_news",
        "search_topic",
        "help",
        "greeting",
        OUT_OF_SCOPE,
        "yes",
    ]
    assert data["nlu"][1]["examples"] == '- find "the tram" story\n- note: # not a comment\n'
    assert yaml.safe_load(write_rasa_yaml([])) == {"version": "3.1", "nlu": []}


# --- Round trips and format names -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "clinc", "rasa"])
def test_every_format_reads_back_what_it_wrote(fmt):
    records = RECORDS[:-1]  # "[not] {markup}" would read back as Rasa entity markup
    assert Counter(read_any(write_any(records, fmt), fmt)) == Counter(records)


def test_writers_collapse_whitespace_and_csv_reads_its_own_quoting():
    text = write_csv([IntentRecord('a, "b"\nc', "x")])
    assert text == 'text,label\r\n"a, ""b""\nc",x\r\n'
    assert read_csv(text) == [IntentRecord('a, "b" c', "x")]


def test_format_names():
    assert [format_for_filename(n) for n in ["a.CSV", "data_full.json", "nlu.yml", "nlu.yaml", "x.txt"]] == [
        "csv",
        "clinc",
        "rasa",
        "rasa",
        None,
    ]
    with pytest.raises(IntentDataError, match="Unknown format 'xml'"):
        read_any("", "xml")
    with pytest.raises(IntentDataError, match="Unknown format"):
        write_any(RECORDS, "md")
