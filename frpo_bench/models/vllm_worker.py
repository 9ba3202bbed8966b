"""A vLLM engine in its own process, driven over a pipe by `generate_vllm.VLLMGenerator`.

Run as `python -m frpo_bench.models.vllm_worker`. vLLM starts worker processes of its own and must own its
process's main module, so it never runs inside the harness process. The worker imports vLLM first (~10 s of one core
here), then reads its settings: a process can be started before they are known (the model to load does not exist
yet) and import meanwhile. Protocol: one JSON object per line on stdin, the first the engine's settings; answers one
per line on the protocol fd (the original stdout; everything vLLM prints goes to stderr instead). The worker answers
{"ready": ...} once the engine is up, then one answer per request: {"token_ids": [[...], ...], "seconds": s} or {"error": "..."}.
A request: {"prompt_token_ids": [[...]], "sampling": {...SamplingParams fields} (or a list, one per prompt),
"adapter": path|null, "weights": path, "merge": bool}: `weights` a checkpoint of the engine's architecture,
swapped in when it is not the one loaded; the adapter served by vLLM's LoRA, or with `merge` merged into those
weights and swapped in.
"""
from __future__ import annotations

import json
import os
import sys
import time


def engine_args(settings: dict) -> dict:
    """LLM(...) keyword arguments from the worker settings (pure: tested without vLLM)."""
    args = dict(model=settings["model"], tokenizer=settings["model"], dtype=settings["dtype"], seed=settings["seed"],
                max_model_len=settings["max_model_len"], enforce_eager=settings["enforce_eager"],
                tensor_parallel_size=settings["tensor_parallel_size"], trust_remote_code=settings["trust_remote_code"],
                worker_extension_cls="frpo_bench.models.vllm_weights.WeightSwap")
    if settings.get("max_lora_rank"):
        args.update(enable_lora=True, max_lora_rank=settings["max_lora_rank"], max_loras=1)
    if settings.get("gpu_memory_utilization"):
        args["gpu_memory_utilization"] = settings["gpu_memory_utilization"]
    if settings.get("block_size"):
        args["block_size"] = settings["block_size"]
    return args


def shared_block_prefixes(prompts: list[list[int]], block: int) -> list[list[int]]:
    """The prefixes, in whole KV-cache blocks, that prompts share with another: for each prompt its longest one, then
    only those no longer one extends (pure: tested without vLLM). vLLM's prefix cache holds a block once it is
    computed, so prompts submitted together each compute the blocks they share (few-shot examples: 23% of a 1-shot
    GSM8K batch's prompt tokens here); computed first, each shared block runs once."""
    chains = []  # per prompt, a hash per whole block of its prefix (the last token is always computed: never cached)
    for ids in prompts:
        chain, last = [], 0
        for end in range(block, len(ids), block):
            last = hash((last, tuple(ids[end - block: end])))
            chain.append(last)
        chains.append(chain)
    counts: dict[int, int] = {}
    for chain in chains:
        for link in chain:
            counts[link] = counts.get(link, 0) + 1
    longest: dict[int, list[int]] = {}  # the chain hash of each prompt's longest shared prefix -> that prefix
    for ids, chain in zip(prompts, chains):
        shared = [i for i, link in enumerate(chain) if counts[link] > 1]
        if shared:
            longest.setdefault(chain[shared[-1]], ids[: (shared[-1] + 1) * block])
    inner = set()  # a chosen prefix that a longer chosen one extends: computed with it
    for chain in chains:
        extended = False
        for link in reversed(chain):
            if link in longest:
                if extended:
                    inner.add(link)
                extended = True
    return [prefix for link, prefix in longest.items() if link not in inner]


def serve(requests, answers) -> None:
    importing = time.time()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    imported = time.time() - importing
    first = requests.readline()
    if not first.strip():  # closed before its settings came: a spare that was not needed
        return
    settings = json.loads(first)
    start = time.time()
    llm = LLM(**engine_args(settings))
    answer(answers, {"ready": True, "seconds": time.time() - start, "import_seconds": imported})
    cache = llm.llm_engine.vllm_config.cache_config
    block = cache.block_size if cache.enable_prefix_caching else 0  # 0: nothing to prime
    adapters: dict[str, int] = {}  # adapter path -> LoRA id; vLLM caches loaded adapters by id
    loaded = [settings["model"], None]  # the weights the engine holds (checkpoint, merged adapter): others are swapped in
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            lora, wanted = None, [request.get("weights", loaded[0]), None]
            if request.get("adapter") and request.get("merge"):
                wanted[1] = request["adapter"]
            elif request.get("adapter"):
                path = request["adapter"]
                adapters.setdefault(path, len(adapters) + 1)
                lora = LoRARequest(f"adapter{adapters[path]}", adapters[path], path)
            swap_seconds = 0.0
            if wanted != loaded:
                swapping = time.time()
                loaded = [None, None]  # a swap that fails half-way leaves weights that are no checkpoint's
                llm.collective_rpc("load_weights_from", args=tuple(wanted))
                llm.reset_prefix_cache()  # cached blocks hold the old weights' keys and values
                loaded, swap_seconds = wanted, time.time() - swapping
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompt_token_ids"]]
            started = time.time()
            sampling = request["sampling"]  # one setting for all prompts, or one per prompt (its own seed)
            params = [SamplingParams(**s) for s in sampling] if isinstance(sampling, list) else SamplingParams(**sampling)
            primes = shared_block_prefixes(request["prompt_token_ids"], block) if block else []
            if primes:  # computed once into the prefix cache, then read by every prompt that shares them
                llm.generate([TokensPrompt(prompt_token_ids=p) for p in primes], SamplingParams(max_tokens=1),
                             lora_request=lora, use_tqdm=False)
            outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
            answer(answers, {"token_ids": [list(o.outputs[0].token_ids) for o in outputs],
                             "seconds": time.time() - started, "swap_seconds": swap_seconds})
        except Exception as err:  # the engine stays up: report and take the next request
            answer(answers, {"error": f"{err.__class__.__name__}: {err}"})


def answer(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def main() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints must not corrupt the protocol
    try:
        serve(sys.stdin, protocol)
    except Exception as err:
        answer(protocol, {"error": f"{err.__class__.__name__}: {err}", "fatal": True})
        raise


if __name__ == "__main__":
    main()
