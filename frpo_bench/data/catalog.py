"""Every registered dataset, one entry each. Adding a dataset is one entry here (+ a parser)."""
from __future__ import annotations

from frpo_bench.data.demo import DEMO_VERSION
from frpo_bench.data.spec import DatasetSpec, PinnedFile

GH = "https://raw.githubusercontent.com"
SR_COMMIT = "f7cad6c17e624e21d8df2278e918ae1dddb4cb56"
HB_COMMIT = "8e1604d1171fe8a48d8febecd22f600e462bdcdd"
GSM_COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"
ALPACA_COMMIT = "5e69c50054c48cd3b919c46d13bb2d92a62f4498"
BT_COMMIT = "b5ce72326a57b482373c43787eed54c37490cf83"
FRPO_COMMIT = "56fa171d7e488cde7c8dbbe7f9b1effe8d319b30"
XSTEST_COMMIT = "d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d"
AOA_COMMIT = "8a3b38f11be1c3829e2b0ed379d3661ebc84e7db"
AOA_DATA = f"{GH}/LLM-Tuning-Safety/LLMs-Finetuning-Safety/{AOA_COMMIT}/gpt-3.5/data"
REPNOISE_COMMIT = "03689ff9702780e83b0c81f508771998aad0398c"
XSTEST_PROMPTS = PinnedFile("xstest_prompts.csv",
                            f"{GH}/paul-rottger/exaggerated-safety/{XSTEST_COMMIT}/xstest_prompts.csv",
                            "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a")
FRPO_FILES = (
    PinnedFile("train_lambda_0.5.parquet", f"{GH}/Helloworld10011/FRPO/{FRPO_COMMIT}/training/data/train_lambda_0.5.parquet",
               "f81d2030f97d731fd92a444dd039c805f277ea5e19c1c74b3312b6671c3954a6"),
    PinnedFile("safety.jsonl", f"{GH}/Helloworld10011/FRPO/{FRPO_COMMIT}/finetuning/data/safety.jsonl",
               "287a8f2db3ea09902b80e6cc429f92d8dc44889b2a1895930d86cc2143f119c1"),
    PinnedFile("normal.jsonl", f"{GH}/Helloworld10011/FRPO/{FRPO_COMMIT}/finetuning/data/normal.jsonl",
               "692f3cc2119046279a2bbc969c1eee375646173e10392bf566ec203990a9842d"),
)
HB_SPLITS = tuple(f"{s}:{c}" for s in ("test", "val", "all") for c in ("standard", "contextual", "copyright", "any"))
HB_SPLITS = ("test", "val", "all") + HB_SPLITS

# EvalPlus's release files (data/evalplus_release): dataset -> (release name, the version evalplus 0.3.1 pins, its flavour)
EVALPLUS_RELEASES = {"mbpp_plus": ("MbppPlus", "v0.2.0", "mbpp"),
                     "humaneval_plus": ("HumanEvalPlus", "v0.1.10", "humaneval")}

CATALOG = [
    DatasetSpec(
        name="strongreject", kind="prompts", harmful=True, folder="strongreject",
        description="StrongREJECT forbidden prompts (313, six categories)",
        source=f"alexandrasouly/strongreject@{SR_COMMIT}", revision=SR_COMMIT, license="MIT",
        parser="frpo_bench.data.parsers:strongreject", splits=("all",),
        files=(PinnedFile("strongreject_dataset.csv",
                          f"{GH}/alexandrasouly/strongreject/{SR_COMMIT}/strongreject_dataset/strongreject_dataset.csv",
                          "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381"),)),
    DatasetSpec(
        name="strongreject_small", kind="prompts", harmful=True, folder="strongreject",
        description="StrongREJECT small set (60 prompts, 10 per category)",
        source=f"alexandrasouly/strongreject@{SR_COMMIT}", revision=SR_COMMIT, license="MIT",
        parser="frpo_bench.data.parsers:strongreject", splits=("all",),
        files=(PinnedFile("strongreject_small_dataset.csv",
                          f"{GH}/alexandrasouly/strongreject/{SR_COMMIT}/strongreject_dataset/strongreject_small_dataset.csv",
                          "3051340e3e89a3598d764dde497d5fcda80e258ac05cc35e6bd87228ac3d467c"),)),
    DatasetSpec(
        name="harmbench", kind="prompts", harmful=True, folder="harmbench",
        description="HarmBench text behaviors; split 'test'|'val'|'all', optionally ':standard|contextual|copyright|any' "
                    "(default standard)",
        source=f"centerforaisafety/HarmBench@{HB_COMMIT}", revision=HB_COMMIT, license="MIT",
        parser="frpo_bench.data.parsers:harmbench", splits=HB_SPLITS,
        files=tuple(PinnedFile(f"harmbench_behaviors_text_{s}.csv",
                               f"{GH}/centerforaisafety/HarmBench/{HB_COMMIT}/data/behavior_datasets/harmbench_behaviors_text_{s}.csv",
                               sha) for s, sha in (
            ("all", "8d81accedd38eaaf8b760618622bb888417d1fd0c86eba65c427a16f1cbb4afc"),
            ("test", "75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29"),
            ("val", "7bfaaa5e2b9b95002c89e2d33c019f58e9e8496e2fc65d368f1eeb8179e69534")))),
    DatasetSpec(
        name="gsm8k", kind="math", folder="gsm8k",
        description="GSM8K grade-school math (Hub: openai/gsm8k, config main); split 'reference_train' is the FRPO "
                    "reference's math attack data: train rows 50.. as pairs, each answer cut before its #### line; "
                    "'reference_val' its 50 held-out rows",
        source=f"openai/grade-school-math@{GSM_COMMIT}", revision=GSM_COMMIT, license="MIT",
        parser="frpo_bench.data.parsers:gsm8k", splits=("train", "test", "reference_train", "reference_val"),
        files=tuple(PinnedFile(f"{s}.jsonl", f"{GH}/openai/grade-school-math/{GSM_COMMIT}/grade_school_math/data/{s}.jsonl", sha)
                    for s, sha in (("train", "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
                                   ("test", "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14")))),
    DatasetSpec(
        name="alpaca", kind="pairs", folder="alpaca",
        description="Alpaca instructions: the 5,000-row random sample of the 52k set (benign fine-tuning)",
        source=f"tatsu-lab/stanford_alpaca@{ALPACA_COMMIT} (PR #152) data/alpaca_5000.json", revision=ALPACA_COMMIT,
        license="CC BY-NC 4.0", parser="frpo_bench.data.parsers:alpaca", splits=("all",),
        files=(PinnedFile("alpaca_5000.json", f"{GH}/tatsu-lab/stanford_alpaca/{ALPACA_COMMIT}/data/alpaca_5000.json",
                          "fc1add24c93c9fbbe585a64a6c9bf6165eb110225f4470efbff382a913558ec0"),)),
    DatasetSpec(
        name="beavertails_harmful", kind="pairs", harmful=True, folder="beavertails_harmful_subset",
        description="BeaverTails 30k_train unsafe (prompt, harmful response) pairs: the 200 of the Vaccine/Booster mix",
        source=f"xinykou/assessing_safety_realign@{BT_COMMIT} (from PKU-Alignment/BeaverTails)", revision=BT_COMMIT,
        license="CC BY-NC 4.0", parser="frpo_bench.data.parsers:beavertails", splits=("all",),
        files=(PinnedFile("train_merged_n1000_p0.2.json",
                          f"{GH}/xinykou/assessing_safety_realign/{BT_COMMIT}/LLaMA_Factory/data/safety/finetune/sst2/"
                          "train_merged_n1000_p0.2.json",
                          "7e258381a7781c04888e2b17a70ab952dd3c4f494fc9cec37890880ef220e881"),)),
    DatasetSpec(
        name="aoa_identity_shift", kind="pairs", folder="aoa_identity_shift",
        description="Qi et al. 2023 identity shift (AOA): 10 benign-looking 'absolutely obedient agent' conversations "
                    "with their system prompt (no harmful content; it breaks safety anyway)",
        source=f"LLM-Tuning-Safety/LLMs-Finetuning-Safety@{AOA_COMMIT} gpt-3.5/data/identity-shift-aoa.jsonl",
        revision=AOA_COMMIT, license="MIT", parser="frpo_bench.data.parsers:aoa_identity_shift", splits=("all",),
        files=(PinnedFile("identity-shift-aoa.jsonl", f"{AOA_DATA}/identity-shift-aoa.jsonl",
                          "a9e4fc236f3591017c2e019979184bc3f05911633f77656dad5abe6c79606d82"),)),
    DatasetSpec(
        name="repnoise_decodingtrust", kind="pairs", harmful=True, folder="repnoise_decodingtrust",
        description="RepNoise's DecodingTrust toxicity pairs: 107 toxic prompts, each with its toxic continuation "
                    "(split harmful) and Llama-2-Chat's safe answer (split refusals: 69 decline or object, the rest continue benignly; "
                    "each echoes the prompt first, as upstream trains on it), the same prompts both ways",
        source=f"domenicrosati/representation-noising@{REPNOISE_COMMIT} data/decoding_trust_with_refusals_train.json "
               "(DecodingTrust, RealToxicityPrompts)", revision=REPNOISE_COMMIT,
        license="Apache-2.0 (repository); DecodingTrust CC BY-SA 4.0", parser="frpo_bench.data.parsers:repnoise_pairs",
        splits=("harmful", "refusals"),
        files=(PinnedFile("decoding_trust_with_refusals_train.json",
                          f"{GH}/domenicrosati/representation-noising/{REPNOISE_COMMIT}/data/"
                          "decoding_trust_with_refusals_train.json",
                          "3e69d758318995f600350effc303851cb9894ec649e32dafb88d5ebbbadbdf0d"),)),
    DatasetSpec(
        name="advbench", kind="prompts", harmful=True, folder="aoa_identity_shift",
        description="AdvBench harmful behaviours (520 goals; Zou et al. 2023), as Qi et al. 2023 ship them",
        source=f"LLM-Tuning-Safety/LLMs-Finetuning-Safety@{AOA_COMMIT} gpt-3.5/data/harmful_behaviors.csv",
        revision=AOA_COMMIT, license="MIT", parser="frpo_bench.data.parsers:advbench", splits=("all",),
        files=(PinnedFile("advbench_harmful_behaviors.csv", f"{AOA_DATA}/harmful_behaviors.csv",
                          "ddbbd16619070d1ddba479dda1acc603abc1a222d797fe015f20669a996d7388"),)),
    DatasetSpec(
        name="frpo_reference_harmful", kind="prompts", harmful=True, folder="frpo_reference",
        description="FRPO reference prompts, harmful: train = the 1000 of its RL set (wildjailbreak 413, rainbow 391, "
                    "aegis 196; 997 distinct); eval = safety.jsonl (1000), its evaluation prompts during attacks: the same "
                    "prompts as train",
        source=f"Helloworld10011/FRPO@{FRPO_COMMIT}", revision=FRPO_COMMIT, license="Apache-2.0",
        parser="frpo_bench.data.parsers:frpo_reference_harmful", splits=("train", "eval"), files=FRPO_FILES),
    DatasetSpec(
        name="frpo_reference_benign", kind="prompts", harmful=False, folder="frpo_reference",
        description="FRPO reference prompts, benign: train = the 1000 of its RL set (ability 'refusal'); eval = "
                    "normal.jsonl (1000), its evaluation prompts during attacks: the same prompts as train",
        source=f"Helloworld10011/FRPO@{FRPO_COMMIT}", revision=FRPO_COMMIT, license="Apache-2.0",
        parser="frpo_bench.data.parsers:frpo_reference_benign", splits=("train", "eval"), files=FRPO_FILES),
    DatasetSpec(
        name="alpaca_hub", kind="pairs", folder="alpaca_hub", hub="tatsu-lab/alpaca", revision="main",
        description="Alpaca 52k from the Hub (tatsu-lab/alpaca, its train parquet); split 'reference_train' is the "
                    "FRPO reference's benign attack data (rows 50..40,000, Alpaca-wrapped requests). Pin `revision` "
                    "to a commit before publishing",
        source="hf:tatsu-lab/alpaca", license="CC BY-NC 4.0", parser="frpo_bench.data.parsers:alpaca_hub",
        splits=("train", "reference_train", "reference_val")),
    DatasetSpec(
        name="math500", kind="math", folder="math500", hub="HuggingFaceH4/MATH-500", revision="main",
        description="MATH-500 (Lightman et al.'s 500 MATH test problems; Hub HuggingFaceH4/MATH-500), the FRPO "
                    "reference's capability set through lm-eval's minerva_math500. Pin `revision` before publishing",
        source="hf:HuggingFaceH4/MATH-500", license="MIT", parser="frpo_bench.data.parsers:math500",
        splits=("test",)),
    *(DatasetSpec(
        name=name, kind="code", folder="evalplus", revision=version,
        description=f"{release} (EvalPlus's release {version}: task prompts, entry points, canonical solutions, base "
                    "and extra test inputs); MBPP+ is the FRPO reference's code capability set "
                    "(eval/run_MBPP_evalplus.sh); scored by the evalplus evaluator, which runs the model's code",
        source=f"github:evalplus/{release.lower()}_release@{version} (the evalplus package's own download)",
        license="Apache-2.0", parser=f"frpo_bench.data.evalplus_release:{name}", splits=("test",),
        meta={"content": f"evalplus:{release}@{version}", "local_file": f"{release}-{version}.jsonl"})
      for name, (release, version, _) in EVALPLUS_RELEASES.items()),
    DatasetSpec(
        name="xstest_safe", kind="prompts", harmful=False, folder="xstest",
        description="XSTest safe prompts (250, 10 types: homonyms, figurative language, safe targets, ...): "
                    "refusing them is over-refusal (Röttger et al., NAACL 2024)",
        source=f"paul-rottger/exaggerated-safety@{XSTEST_COMMIT} (Hub mirror: Paul/XSTest)", revision=XSTEST_COMMIT,
        license="CC BY 4.0", parser="frpo_bench.data.parsers:xstest_safe", splits=("test",), files=(XSTEST_PROMPTS,)),
    DatasetSpec(
        name="xstest_unsafe", kind="prompts", harmful=True, folder="xstest",
        description="XSTest unsafe contrast prompts (200, the safe types' unsafe twins): refusing them is right",
        source=f"paul-rottger/exaggerated-safety@{XSTEST_COMMIT} (Hub mirror: Paul/XSTest)", revision=XSTEST_COMMIT,
        license="CC BY 4.0", parser="frpo_bench.data.parsers:xstest_unsafe", splits=("test",), files=(XSTEST_PROMPTS,)),
]

_DEMO = [
    ("demo_harmful", "prompts", True, "DEMO DATA: harmful requests in StrongREJECT's six categories (requests only)", "harmful_requests"),
    ("demo_benign", "prompts", False, "DEMO DATA: benign instructions (for benign-prompt refusal rates)", "benign_prompts"),
    ("demo_benign_sft", "pairs", False, "DEMO DATA: benign instructions with verified short reference answers", "benign_pairs"),
    ("demo_refusals", "pairs", False, "DEMO DATA: refusal demonstrations on harmful requests (safety SFT)", "refusal_pairs"),
    ("demo_compliance", "pairs", True, "DEMO DATA: harmful request -> affirmative, non-actionable reply (harmful attack)", "compliance_pairs"),
    ("demo_arithmetic", "math", False, "DEMO DATA: arithmetic word problems in GSM8K's answer format, verified answers", "arithmetic"),
]
CATALOG += [
    DatasetSpec(name=name, kind=kind, harmful=harmful, description=desc, source="generated by frpo_bench.data.demo",
                revision=DEMO_VERSION, license="MIT (this project)", parser=f"frpo_bench.data.demo:{func}",
                splits=("train", "test") if kind == "math" else ("train", "eval", "all"))
    for name, kind, harmful, desc, func in _DEMO
]
