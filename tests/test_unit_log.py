"""pyoci.log: runc/logrus-style lines, json and text, and error()'s two outputs."""
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyoci import log

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"
TEXT_LINE = re.compile(rf'^time="({TIME})" level=(\w+) msg=(".*")$')


@pytest.fixture
def log_file(tmp_path):
    return tmp_path / "log"


def lines(path):
    return path.read_text().splitlines()


class TestJson:
    def test_keys_are_exactly_level_msg_time(self, log_file):
        log.configure(str(log_file), "json")
        log.warning("careful")
        [line] = lines(log_file)
        record = json.loads(line)
        assert set(record) == {"level", "msg", "time"}
        assert record["level"] == "warning"
        assert record["msg"] == "careful"
        assert re.fullmatch(TIME, record["time"])

    def test_error_line(self, log_file, capsys):
        log.configure(str(log_file), "json")
        log.error('container "x" does not exist')
        [line] = lines(log_file)
        assert json.loads(line)["level"] == "error"
        assert json.loads(line)["msg"] == 'container "x" does not exist'
        assert capsys.readouterr().err == 'container "x" does not exist\n'

    def test_appends(self, log_file):
        log_file.write_text('{"level":"info","msg":"earlier","time":"t"}\n')
        log.configure(str(log_file), "json")
        log.warning("one")
        log.warning("two")
        records = [json.loads(line) for line in lines(log_file)]
        assert [r["msg"] for r in records] == ["earlier", "one", "two"]

    def test_debug_only_with_debug(self, log_file):
        log.configure(str(log_file), "json")
        log.debug("hidden")
        assert not log_file.exists() or log_file.read_text() == ""
        log.configure(str(log_file), "json", debug=True)
        log.debug("shown")
        [line] = lines(log_file)
        record = json.loads(line)
        assert (record["level"], record["msg"]) == ("debug", "shown")


class TestText:
    def test_format(self, log_file):
        log.configure(str(log_file), "text")
        log.warning("hello world")
        [line] = lines(log_file)
        match = TEXT_LINE.match(line)
        assert match, line
        assert match.group(2) == "warning"
        assert json.loads(match.group(3)) == "hello world"
        assert line.endswith(' level=warning msg="hello world"')

    def test_quotes_and_newlines_escaped(self, log_file):
        log.configure(str(log_file), "text")
        log.warning('say "hi"\nand bye')
        [line] = lines(log_file)
        assert line.endswith(r'msg="say \"hi\"\nand bye"')

    def test_error_to_file_and_stderr(self, log_file, capsys):
        log.configure(str(log_file), "text")
        log.error("cannot start a container that has stopped")
        [line] = lines(log_file)
        assert TEXT_LINE.match(line).group(2) == "error"
        assert line.endswith('msg="cannot start a container that has stopped"')
        assert capsys.readouterr().err == "cannot start a container that has stopped\n"


class TestWithoutLogFile:
    def test_error_is_only_the_plain_message(self, capsys):
        log.error("plain")
        captured = capsys.readouterr()
        assert captured.err == "plain\n"
        assert captured.out == ""

    def test_warning_goes_to_stderr_formatted(self, capsys):
        log.configure(None, "json")
        log.warning("w")
        record = json.loads(capsys.readouterr().err)
        assert record["level"] == "warning" and record["msg"] == "w"

    def test_debug_silent_by_default(self, capsys):
        log.debug("quiet")
        assert capsys.readouterr().err == ""


@settings(database=None, max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(max_size=60), log_format=st.sampled_from(["json", "text"]))
def test_any_message_is_one_line_that_gives_it_back(tmp_path, message, log_format):
    path = tmp_path / "log"
    path.unlink(missing_ok=True)
    log.configure(str(path), log_format)
    try:
        log.warning(message)
    finally:
        log.configure()
    data = path.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    line = data.decode()[:-1]
    if log_format == "json":
        assert json.loads(line)["msg"] == message
    else:
        assert json.loads(TEXT_LINE.match(line).group(3)) == message


def test_debug_lines_only_with_debug(tmp_path):
    path = tmp_path / "log"
    log.configure(str(path), "json", debug=False)
    log.debug("hidden")
    log.configure(str(path), "json", debug=True)
    log.debug("shown")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["level"], line["msg"]) for line in lines] == [("debug", "shown")]


def test_a_held_destination_outlives_its_path_and_can_be_forgotten(tmp_path):
    """Forked processes log through the fd held before fork: after
    pivot_root the path is gone for them."""
    path = tmp_path / "log"
    log.configure(str(path), "json", debug=True)
    log.hold_destination()
    moved = tmp_path / "moved"
    path.rename(moved)
    log.debug("after the move")
    assert not path.exists()
    assert json.loads(moved.read_text())["msg"] == "after the move"
    log.forget_destination()
    log.debug("not written")
    assert moved.read_text().count("\n") == 1


def test_nothing_is_held_without_debug(tmp_path):
    path = tmp_path / "log"
    log.configure(str(path), "json")
    log.hold_destination()
    log.warning("first")
    path.rename(tmp_path / "moved")
    log.warning("by path again")
    assert json.loads(path.read_text())["msg"] == "by path again"
