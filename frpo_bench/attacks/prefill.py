"""Prefilling (Qi et al. 2024, "Safety Alignment Should Be Made More Than Just a Few Tokens Deep"): no training;
at decoding time the first k tokens of a harmful answer are forced right after the chat template's assistant
turn, and the model continues from them. Alignment that lives in the first few tokens of an answer does not
survive it. The depth k plays the part a learning rate plays for fine-tuning: list one attack per depth.

What is scored is the whole answer, the forced tokens and the continuation, as the paper scores it (every
judge sees the same text). Only harmful requests are prefilled, each with the response its pairs data set gives
for the same prompt (a harmful set evaluated must be covered: checked before compute); benign sets are
generated as they are, so over-refusal rows measure the unattacked model under this attack's name.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from frpo_bench.attacks.base import AttackBase
from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.typed import Options, opt

PREFILL_UNCOVERED = ("error", "skip")  # a harmful set the pairs do not cover: stop, or leave it out

@dataclass
class PrefillOptions(Options):
    data: DataRef = opt(help="(harmful request, harmful answer) pairs whose answers are forced, matched to the "
                             "evaluated prompts by their text (the demo: demo_compliance of the same split)")
    tokens: int = opt(10, help="k: how many tokens of the answer are forced (the paper sweeps 5, 10, 20, 40)")
    uncovered: str = opt("error", help="a harmful evaluation whose prompts the pairs do not cover: error (before "
                                       "compute), or skip (this attack's cells have no row for it; e.g. a recipe "
                                       "whose benchmark prompts have no harmful answers, scored on the pairs' own "
                                       "prompts by an evaluation with `attacks:`)")

    def validate(self, path: str) -> None:
        if self.tokens < 1:
            raise ConfigError(f"{path}.tokens", self.tokens, "must be positive", "use e.g. 5, 10, 20 or 40")
        if self.uncovered not in PREFILL_UNCOVERED:
            raise ConfigError(f"{path}.uncovered", self.uncovered, "is not a choice", f"use one of {PREFILL_UNCOVERED}")

    def key_fields(self) -> dict:
        fields = super().key_fields()
        fields.pop("uncovered")  # which cells are planned, not what a generation is
        return fields

    def data_refs(self) -> list[DataRef]:
        return [self.data]


class PrefillAttack(AttackBase):
    """Prefilling: the first k tokens of a harmful answer forced at decoding time; the weights are the defended
    model's (no attack stage: attacks/base.py, `changes_weights`)."""

    Options = PrefillOptions
    changes_weights = False

    @staticmethod
    def generation(options: PrefillOptions, gen):
        return replace(gen, prefill_data=options.data, prefill_tokens=options.tokens)

    @staticmethod
    def prompt_generation(options: PrefillOptions, gen, prompts):
        """Openings are forced on harmful requests only (benign sets are generated as they are), and every harmful
        request evaluated needs a response to force: a set the pairs do not cover stops the plan, or is left out
        (`uncovered: skip`). A run plans after its data is fetched, so the check always runs there."""
        from frpo_bench.data import ref_rows, spec_for
        from frpo_bench.data.prompts import responses_for
        if not spec_for(prompts).harmful:
            return replace(gen, prefill_data=None, prefill_tokens=0)
        try:
            responses_for(ref_rows(prompts), options.data)
        except ConfigError:
            return gen  # the data is not here yet (`plan` offline): a run checks once preflight has fetched it
        except ValueError as err:
            if options.uncovered == "skip":
                return None
            raise ConfigError(f"prompts {prompts.dataset}/{prompts.split}", prompts.n, f"are prefilled, and {err}",
                              "evaluate the prefilling attack on prompts its pairs data covers") from None
        return gen
