"""Resolving `--option NAME=VALUE` and `--backbone NAME` against what an adapter declares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fssbench.harness.errors import UsageError

if TYPE_CHECKING:  # this module is used before torch is imported (planning checks a command line first)
    from fssbench.harness.contract import Adapter, OptionValue

TRUE_WORDS = {"true", "on", "yes", "1"}
FALSE_WORDS = {"false", "off", "no", "0"}


def parse_value(name: str, text: str, default: OptionValue) -> OptionValue:
    if isinstance(default, bool):
        word = text.lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        raise UsageError(f"--option {name}={text}: expected true or false (or on/off, yes/no, 1/0)")
    try:
        return type(default)(text)
    except ValueError:
        raise UsageError(f"--option {name}={text}: expected {type(default).__name__} "
                         f"(the default is {default!r})") from None


def resolve_options(method: str, adapter: type[Adapter], flags: list[str]) -> dict[str, OptionValue]:
    """The adapter's options with the user's settings applied, typed by each option's default."""
    options = dict(adapter.option_defaults)
    given: set[str] = set()
    for flag in flags:
        name, sep, text = flag.partition("=")
        if not sep or not name:
            raise UsageError(f"--option {flag!r}: expected NAME=VALUE, e.g. --option steps=50")
        if name not in options:
            accepted = ", ".join(f"{key} (default {value!r})" for key, value in adapter.option_defaults.items())
            raise UsageError(f"method {method!r} has no option {name!r}; its options: {accepted or 'none'}")
        if name in given:
            raise UsageError(f"--option {name}= is given twice")
        given.add(name)
        options[name] = parse_value(name, text, adapter.option_defaults[name])
    adapter.check_choices(options)
    return options


def changed_options(adapter: type[Adapter], options: dict[str, OptionValue]) -> dict[str, OptionValue]:
    return {name: value for name, value in options.items() if adapter.option_defaults.get(name) != value}


def describe_options(options: dict[str, OptionValue]) -> str:
    """"qsm=off,sigma=2.0": how a run's options differ from the method's defaults, for tables."""
    def text(value: OptionValue) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    return ",".join(f"{name}={text(value)}" for name, value in sorted(options.items()))


def resolve_backbone(method: str, adapter: type[Adapter], backbone: str | None) -> str | None:
    if backbone is None or backbone in adapter.backbones:
        return backbone or (adapter.backbones[0] if adapter.backbones else None)
    if not adapter.backbones:
        raise UsageError(f"method {method!r} has a fixed backbone; drop --backbone {backbone}")
    raise UsageError(f"method {method!r} does not run on backbone {backbone!r}; "
                     f"it accepts: {', '.join(adapter.backbones)} (fssbench list backbones)")
