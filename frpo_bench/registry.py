"""Name -> "module:attr" registries. Adding a component is one file plus one line here.

Component modules import torch and other heavy backends only inside their functions,
so looking up a component's options (for validation and `ls`) stays cheap.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any

from frpo_bench.errors import ConfigError

DEFENSES = {
    "none": "frpo_bench.defenses.none:NoDefense",
    "grpo": "frpo_bench.defenses.grpo:GRPODefense",
    "frpo": "frpo_bench.defenses.frpo:FRPODefense",
    "tar": "frpo_bench.defenses.tar:TARDefense",
    "rr": "frpo_bench.defenses.rr:RRDefense",
    "repnoise": "frpo_bench.defenses.repnoise:RepNoiseDefense",
    "booster": "frpo_bench.defenses.booster:BoosterDefense",
    "vaccine": "frpo_bench.defenses.vaccine:VaccineDefense",
    "safelora": "frpo_bench.defenses.safelora:SafeLoRADefense",
    "checkpoint": "frpo_bench.defenses.checkpoint:CheckpointDefense",
}
ATTACKS = {
    "finetune": "frpo_bench.attacks.finetune:FinetuneAttack",
    "refusal_ablation": "frpo_bench.attacks.refusal_ablation:RefusalAblationAttack",
    "identity_shift": "frpo_bench.attacks.identity_shift:IdentityShiftAttack",
    "prefill": "frpo_bench.attacks.prefill:PrefillAttack",
    "jailbreak_tuning": "frpo_bench.attacks.jailbreak_tuning:JailbreakTuningAttack",
    "harmful_rl": "frpo_bench.attacks.harmful_rl:HarmfulRLAttack",
}
EVALUATORS = {
    "refusal": "frpo_bench.evaluators.refusal:RefusalEvaluator",
    "gsm8k": "frpo_bench.evaluators.gsm8k:Gsm8kEvaluator",
    "math500": "frpo_bench.evaluators.math500:Math500Evaluator",
    "evalplus": "frpo_bench.evaluators.evalplus_code:EvalPlusEvaluator",
    "strongreject_rubric": "frpo_bench.evaluators.strongreject_rubric:StrongRejectRubricEvaluator",
    "strongreject_finetuned": "frpo_bench.evaluators.strongreject_finetuned:StrongRejectFinetunedEvaluator",
    "harmbench": "frpo_bench.evaluators.harmbench:HarmBenchEvaluator",
    "harmbench_reference": "frpo_bench.evaluators.harmbench_reference:HarmBenchReferenceEvaluator",
    "helpfulness": "frpo_bench.evaluators.helpfulness:HelpfulnessEvaluator",
    "helpful_proxy": "frpo_bench.evaluators.helpful_proxy:HelpfulProxyEvaluator",
    "compliance_proxy": "frpo_bench.evaluators.compliance_proxy:ComplianceProxyEvaluator",
    "kl_to_start": "frpo_bench.evaluators.kl_to_start:KLToStartEvaluator",
    "llm_refusal": "frpo_bench.evaluators.llm_refusal:LLMRefusalEvaluator",
    "safety_reward": "frpo_bench.evaluators.safety_reward:SafetyRewardEvaluator",
    "response_loss": "frpo_bench.evaluators.response_loss:ResponseLossEvaluator",
}
GENERATORS = {
    "hf": "frpo_bench.models.generate_hf:HFGenerator",
    "vllm": "frpo_bench.models.generate_vllm:VLLMGenerator",
}
_KINDS = {"defense": DEFENSES, "attack": ATTACKS, "evaluator": EVALUATORS, "generator": GENERATORS}


def check_name(kind: str, name: str, field: str) -> None:
    table = _KINDS[kind]
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(field, name, f"is not a registered {kind}", f"{hint}known: {', '.join(sorted(table))}")


def load(kind: str, name: str) -> Any:
    module, attr = _KINDS[kind][name].split(":")
    return getattr(importlib.import_module(module), attr)


def options_class(kind: str, name: str) -> type:
    """The component's typed Options (every component declares one; `typed.NoOptions` when it takes none)."""
    return load(kind, name).Options


def summary(kind: str, name: str) -> str:
    doc = (load(kind, name).__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def attack_trains(name: str) -> bool:
    """Whether a registered attack type trains at a learning rate (attacks/base.py, AttackBase.trains)."""
    attack = load("attack", name)
    return attack.trains and attack.changes_weights


def defense_repairs(name: str) -> bool:
    """Whether a registered defense acts after the attack (defenses/base.py, DefenseBase.repairs)."""
    return load("defense", name).repairs


def attack_changes_weights(name: str) -> bool:
    """Whether a registered attack type makes a model of its own (attacks/base.py, AttackBase.changes_weights)."""
    return load("attack", name).changes_weights
