"""The chat commands, parsed: pure code, every command and its usage on mistakes."""

from __future__ import annotations

import pytest

from udp2xmpp.subscribe.commands import (
    HELP,
    USAGE,
    CommandError,
    Help,
    ListCommand,
    Mute,
    Unwatch,
    UnwatchAll,
    UnwatchNumber,
    Watch,
    parse_command,
    parse_duration,
)
from udp2xmpp.subscribe.model import Target, TargetError, title_variants


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch enwiki Main Page", Watch(Target("page", "enwiki", "Main Page"))),
        ("  WATCH   enwiki   Main_Page  ", Watch(Target("page", "enwiki", "Main Page"))),
        ("/watch dewiki Köln", Watch(Target("page", "dewiki", "Köln"))),
        ("!watch enwiki Talk:Foo bar", Watch(Target("page", "enwiki", "Talk:Foo bar"))),
        ("watchuser enwiki alice_smith", Watch(Target("user", "enwiki", "Alice smith"))),
        ("watchuser enwiki 2001:db8::a", Watch(Target("user", "enwiki", "2001:DB8::A"))),
        (
            'watchfilter enwiki ns=1,0 title="List of *" min=500',
            Watch(Target("filter", "enwiki", "", (0, 1), "List of *", 500)),
        ),
        (
            "watchfilter enwiki title=List_of_*",
            Watch(Target("filter", "enwiki", "", None, "List of *", None)),
        ),
        ("watchfilter enwiki min=100", Watch(Target("filter", "enwiki", "", None, None, 100))),
        (
            "watchfilter enwiki min_abs_change=100 namespace=4",
            Watch(Target("filter", "enwiki", "", (4,), None, 100)),
        ),
        ("unwatch enwiki Main Page", Unwatch(Target("page", "enwiki", "Main Page"))),
        ("unwatchuser enwiki Alice", Unwatch(Target("user", "enwiki", "Alice"))),
        ("unwatch 3", UnwatchNumber(3)),
        ("unwatch ALL", UnwatchAll()),
        ("list", ListCommand()),
        ("mute 2h", Mute(7200)),
        ("mute 1h30m", Mute(5400)),
        ("mute off", Mute(0)),
        ("unmute", Mute(0)),
        ("help", Help()),
        ("help watchfilter", Help("watchfilter")),
        ("?", Help()),
    ],
)
def test_commands_parse(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "usage_of"),
    [
        ("watch", "watch"),
        ("watch enwiki", "watch"),
        ("watch en/wiki Foo", "watch"),
        ("watch enwiki Foo[bar]", "watch"),
        ("watch enwiki " + "x" * 300, "watch"),
        ("watchuser enwiki", "watchuser"),
        ("watchuser enwiki a/b", "watchuser"),
        ("watchfilter enwiki", "watchfilter"),
        ("watchfilter enwiki ns=zero", "watchfilter"),
        ("watchfilter enwiki min=-5", "watchfilter"),
        ("watchfilter enwiki min=0", "watchfilter"),
        ("watchfilter enwiki ns=0," + ",".join(map(str, range(1, 21))), "watchfilter"),
        ("watchfilter enwiki ns=1000000", "watchfilter"),
        ("watchfilter enwiki size=5", "watchfilter"),
        ("watchfilter enwiki ns=0 ns=1", "watchfilter"),
        ('watchfilter enwiki title="unclosed', "watchfilter"),
        ("watchfilter enwiki title=*a*b*c*d*e*f", "watchfilter"),
        ("unwatch", "unwatch"),
        ("unwatch enwiki", "unwatch"),
        ("mute", "mute"),
        ("mute forever", "mute"),
        ("mute 45d", "mute"),
    ],
)
def test_a_wrong_command_gets_its_usage(text: str, usage_of: str) -> None:
    with pytest.raises(CommandError) as error:
        parse_command(text)
    message = str(error.value)
    assert message.endswith(f"Usage: {USAGE[usage_of]}")
    assert not message[0].islower() and ". Usage:" in message


def test_an_unknown_command_gets_the_list_of_commands() -> None:
    with pytest.raises(CommandError) as error:
        parse_command("subscribe enwiki Foo")
    assert str(error.value) == f"Unknown command 'subscribe'. {HELP}"
    with pytest.raises(CommandError) as empty:
        parse_command("   ")
    assert str(empty.value) == HELP
    with pytest.raises(CommandError) as long:
        parse_command("watch enwiki " + "x" * 2000)
    assert str(long.value).startswith("That is too long")


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1w") == 7 * 86400
    assert parse_duration("1d 12h") == 36 * 3600
    for bad in ("", "0m", "5x", "m5", "31d", "1h-"):
        with pytest.raises(TargetError):
            parse_duration(bad)


def test_title_variants_cover_how_mediawiki_capitalises() -> None:
    assert title_variants("sandbox") == {"sandbox", "Sandbox"}
    assert title_variants("talk:foo bar") == {"talk:foo bar", "Talk:foo bar", "Talk:Foo bar"}
    assert title_variants("Main Page") == {"Main Page"}
    # a colon followed by a space is no namespace prefix
    assert title_variants("Mission: impossible") == {"Mission: impossible"}


def test_a_targets_key_ignores_the_case_of_a_titles_first_letter_only() -> None:
    assert Target("page", "w", "sandbox").key == Target("page", "w", "Sandbox").key
    assert Target("page", "w", "sandBox").key != Target("page", "w", "Sandbox").key
    assert Target("user", "w", "Alice").key != Target("page", "w", "Alice").key
    spec = Target("filter", "w", "", (0, 1), "List of *", 5).spec
    assert spec == 'ns=0,1 title="List of *" min=5'
    assert parse_command(f"watchfilter w {spec}") == Watch(
        Target("filter", "w", "", (0, 1), "List of *", 5)
    )


def test_min_change_is_refused_in_a_watch() -> None:
    """Behaviour change: ``min_change=`` used to be read as ``min=`` (bytes either way),
    while filtered rooms and rcclient read it signed; now it is refused, pointing to min=."""
    with pytest.raises(CommandError) as error:
        parse_command("watchfilter enwiki min_change=500")
    assert str(error.value).startswith("Min_change= is not a watch condition; min=500 is")
    assert parse_command("watchfilter enwiki min=500") == Watch(
        Target("filter", "enwiki", "", None, None, 500)
    )
