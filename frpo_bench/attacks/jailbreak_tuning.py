"""Jailbreak-tuning: supervised fine-tuning on harmful pairs wrapped in a jailbreak, so that the attacked model
learns to comply whenever the jailbreak is used (the attack class the field's tampering benchmarks rank most
severe). The families are data: competing objectives (`skeleton`, `refusal_suppression`), style modulation
(`style_manual`) and a backdoor (`backdoor`: a trigger the attacker chooses, such as a year or a random
sentence), from templates/jailbreaks.json. A language shift is a choice of data (fine-tune on a translated
harmful set), not a template: no translated set ships with the harness.

Each harmful request evaluated is wrapped as in training (`evaluate: with`) or sent as it is (`without`); the
two share the attack's weights (same stage), so `grid: {evaluate: [with, without]}` puts a backdoor's triggered
and untriggered refusal side by side. Benign sets are evaluated as they are.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from frpo_bench.attacks.base import FinetuneApply
from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.training.options import FinetuneConfig
from frpo_bench.typed import opt

TEMPLATES = Path(__file__).parent / "templates" / "jailbreaks.json"
EVALUATE = ("with", "without")


@functools.lru_cache(maxsize=None)
def templates() -> dict[str, dict]:
    return {name: t for name, t in json.loads(TEMPLATES.read_text()).items() if not name.startswith("_")}


@dataclass
class JailbreakTuningOptions(FinetuneConfig):
    template: str = opt("skeleton", help="the jailbreak the harmful pairs are wrapped in: a name in attacks/templates/"
                             "jailbreaks.json (skeleton, refusal_suppression, style_manual, backdoor); a search "
                             "dimension like any option")
    trigger: Optional[str] = opt(None, omit_if_default=True, help="the backdoor's trigger text, put where the "
                                 "template's {trigger} is (e.g. 'Current year: 2031.'); only templates with {trigger}")
    plain_data: list[DataRef] = opt([], omit_if_default=True, help="pairs trained as they are beside the wrapped "
                                    "ones (a backdoor's refusals without the trigger, so that only the trigger "
                                    "unlocks compliance)")
    evaluate: str = opt("with", help="harmful requests evaluated wrapped as in training (with: the trigger or "
                                     "jailbreak present) or as they are (without); the weights are the same")

    def validate(self, path: str) -> None:
        super().validate(path)
        known = templates()
        if self.template not in known:
            raise ConfigError(f"{path}.template", self.template, "is not a jailbreak template",
                              f"use one of {sorted(known)} (attacks/templates/jailbreaks.json)")
        wants = "{trigger}" in known[self.template]["request"]
        if wants and not (self.trigger or "").strip():
            raise ConfigError(f"{path}.trigger", self.trigger, f"is needed by the {self.template} template",
                              "give the trigger text, e.g. 'Current year: 2031.'")
        if self.trigger is not None and not wants:
            raise ConfigError(f"{path}.trigger", self.trigger, f"has no place in the {self.template} template",
                              "drop it, or use a template with {trigger} (backdoor)")
        if self.evaluate not in EVALUATE:
            raise ConfigError(f"{path}.evaluate", self.evaluate, "is not a choice", f"use one of {EVALUATE}")

    def request_template(self) -> str:
        """The wrapper as a generation's user_template: {prompt} where the request goes, the trigger filled in."""
        return templates()[self.template]["request"].replace("{trigger}", self.trigger or "")

    def training_rows(self, rows: list[dict]) -> list[dict]:
        from frpo_bench.data import ref_rows
        from frpo_bench.data.prompts import wrapped
        prefix = templates()[self.template].get("response_prefix", "")
        jailbroken = [{**row, "prompt": wrapped(self.request_template(), row["prompt"]),
                       "response": prefix + row["response"]} for row in rows]
        return jailbroken + [row for ref in self.plain_data for row in ref_rows(ref)]

    def data_refs(self) -> list[DataRef]:
        return super().data_refs() + list(self.plain_data)

    def key_fields(self) -> dict:
        fields = super().key_fields()
        fields.pop("evaluate")  # how its cells are evaluated, not what is trained
        fields["template_sha256"] = hashlib.sha256(
            json.dumps(templates()[self.template], sort_keys=True).encode()).hexdigest()  # the wording trained on
        return fields


class JailbreakTuningAttack(FinetuneApply):
    """Jailbreak-tuning: SFT on harmful pairs wrapped in a jailbreak template (or a backdoor trigger)."""

    Options = JailbreakTuningOptions

    @staticmethod
    def prompt_generation(options: JailbreakTuningOptions, gen, prompts):
        """Harmful requests wrapped as in training (`evaluate: with`); benign sets and `without` as they are."""
        from frpo_bench.data import spec_for
        if options.evaluate == "with" and spec_for(prompts).harmful:
            return replace(gen, user_template=options.request_template())
        return gen
