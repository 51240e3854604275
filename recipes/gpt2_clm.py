"""Pretrain (or continue pretraining) a GPT-2 causal language model.

    accelerate launch recipes/gpt2_clm.py --config recipes/configs/gpt2_clm/shakespeare_tiny.yaml [--key value ...]

Reads top to bottom: arguments -> accelerator and run folder -> text (preflight first) -> tokenizer
(given, or a byte-level BPE trained on the text) -> token blocks (cached) -> model -> the shared
training loop -> final model, tokenizer, generation defaults and model card. The detail lives in ``tunelab``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from tunelab.args import CausalLMArguments, TrainingArguments, to_config
from tunelab.data.lm import (
    build_lm_data,
    default_cache_dir,
    describe_lm_data,
    lm_dataloaders,
    load_lm_documents,
    sample_text,
)
from tunelab.lm import (
    CausalLMForTraining,
    build_gpt2,
    cached_bpe_tokenizer,
    evaluate_causal_lm,
    evaluate_test_blocks,
    flops_per_token,
    generate_samples,
    generation_config,
    gpt2_config,
    load_causal_lm,
    load_lm_tokenizer,
    save_causal_lm,
    tokenizer_fingerprint,
)
from tunelab.models import count_parameters
from tunelab.recipe import (
    RunReport,
    finish_run,
    guard,
    open_run,
    parse_or_exit,
    resolve_output_dir,
    setup_logging,
    start_trackers,
)
from tunelab.train import Task, build_accelerator, train

logger = logging.getLogger("tunelab")


def main() -> None:
    lm_args, train_args = parse_or_exit((CausalLMArguments, TrainingArguments))
    output_dir = resolve_output_dir(train_args, "clm")
    accelerator = build_accelerator(train_args, output_dir)
    main_process = accelerator.is_main_process
    setup_logging(output_dir, main_process)
    config = to_config(lm_args, train_args)
    run, events = open_run(output_dir, "clm", config, accelerator)
    cache_dir = Path(lm_args.cache_dir).expanduser() if lm_args.cache_dir else default_cache_dir()

    with guard(run, main_process):
        # Data: every file check runs before a tokenizer or a model is built, so bad input fails in seconds.
        with accelerator.main_process_first():
            docs = load_lm_documents(
                lm_args.train_file,
                lm_args.validation_file,
                lm_args.text_column,
                lm_args.dataset_config_name,
                lm_args.test_file,
            )
        if main_process:
            run.update_status(stage="tokenizing")
        # The main process trains the tokenizer and tokenizes first; the others then read its cache.
        with accelerator.main_process_first():
            tokenizer_source = lm_args.tokenizer_name or lm_args.model_name_or_path
            if tokenizer_source:
                tokenizer = load_lm_tokenizer(tokenizer_source)
            else:
                tokenizer, hit = cached_bpe_tokenizer(
                    sample_text(docs.train), lm_args.tokenizer_vocab_size, cache_dir, docs.train_key
                )
                logger.info(
                    "Tokenizer: byte-level BPE, %d tokens (%s)",
                    len(tokenizer),
                    "from the cache" if hit else "trained on the training text",
                )
            data = build_lm_data(
                docs,
                tokenizer,
                tokenizer_fingerprint(tokenizer),
                lm_args.block_size,
                lm_args.validation_split_percentage,
                cache_dir,
                lm_args.max_eval_samples,
            )
        if data.cache_hit:
            logger.info("Token cache hit in %s: tokenization skipped.", cache_dir / "tokens")
        logger.info("Data: %s", describe_lm_data(data, lm_args.block_size))

        if lm_args.model_name_or_path:
            model = load_causal_lm(
                lm_args.model_name_or_path, tokenizer, lm_args.block_size, lm_args.dropout_overrides()
            )
        else:
            model = build_gpt2(
                gpt2_config(
                    lm_args.model_size,
                    lm_args.config_overrides,
                    len(tokenizer),
                    lm_args.block_size,
                    tokenizer.eos_token_id,
                    lm_args.dropout_overrides(),
                )
            )
        model.generation_config = generation_config(model, tokenizer)
        logger.info(
            "Model: %s (%s parameters, vocabulary %d rows for %d tokens)",
            lm_args.model_name_or_path or f"GPT-2 {lm_args.model_size} from scratch",
            f"{count_parameters(model):,}",
            model.config.vocab_size,
            len(tokenizer),
        )

        tokens_per_step = (
            lm_args.block_size
            * train_args.per_device_train_batch_size
            * accelerator.num_processes
            * train_args.gradient_accumulation_steps
        )
        if lm_args.max_train_tokens and not train_args.max_train_steps:
            train_args.max_train_steps = math.ceil(lm_args.max_train_tokens / tokens_per_step)
        train_dl, eval_dl = lm_dataloaders(
            data,
            train_args.per_device_train_batch_size,
            train_args.per_device_eval_batch_size,
            on_gpu=accelerator.device.type == "cuda",
            num_workers=train_args.dataloader_num_workers,
        )
        task = Task(
            evaluate=lambda m, dl, final: evaluate_causal_lm(accelerator, m, dl),
            main_metric=train_args.metric_for_best_model or "loss",
            count_tokens=lambda batch: batch["input_ids"].numel(),
            loss=lambda m, batch: m(batch["input_ids"], batch["targets"]),
            on_evaluate=lambda m, state: samples(accelerator, m, tokenizer, lm_args, state),
            flops_per_token=flops_per_token(model, lm_args.block_size),
        )
        start_trackers(accelerator, train_args.report_to, output_dir, config)
        result = train(
            accelerator,
            train_args,
            CausalLMForTraining(model, train_args.label_smoothing),
            train_dl,
            eval_dl,
            task,
            output_dir,
            events,
        )
        finish_run(
            accelerator,
            run,
            result,
            config,
            lambda folder: save_causal_lm(result.model.model, tokenizer, folder),
            lambda: RunReport(
                "text-generation",
                lm_args.model_name_or_path,
                data.validation_source,
                data_summary={
                    "train": f"{data.train_tokens:,} tokens from {lm_args.train_file}",
                    "validation": f"{data.validation_tokens:,} tokens ({data.validation_source})",
                    **(
                        {"test": f"{data.test_tokens:,} tokens ({lm_args.test_file})"}
                        if data.test is not None
                        else {}
                    ),
                    "tokens seen in training": f"{result.state.tokens_seen:,}",
                    "tokenizer": f"{type(tokenizer).__name__}, {len(tokenizer)} tokens",
                },
                results={
                    "tokens_seen": result.state.tokens_seen,
                    "train_tokens": data.train_tokens,
                    "validation_tokens": data.validation_tokens,
                },
                seen=f"{result.state.tokens_seen:,} tokens",
                curve_note="; final validation perplexity "
                f"{result.metrics.get('eval/perplexity', float('nan')):.2f}",
            ),
            test=None
            if data.test is None
            else lambda: evaluate_test_blocks(
                accelerator, result.model, data.test, train_args.per_device_eval_batch_size
            ),
        )


def samples(accelerator, model, tokenizer, lm_args: CausalLMArguments, state) -> dict | None:
    """Greedy continuations of sample_prompts, every sample_every steps (default: each evaluation)."""
    if not lm_args.sample_prompts or not accelerator.is_main_process:
        return None
    at_end = state.global_step >= state.max_steps
    if lm_args.sample_every and state.global_step % lm_args.sample_every and not at_end:
        return None
    lm = accelerator.unwrap_model(model).model
    return {"samples": generate_samples(lm, tokenizer, lm_args.sample_prompts, lm_args.sample_max_new_tokens)}


if __name__ == "__main__":
    main()
