"""Pretrain (or continue pretraining) a GPT-2 causal language model, or fine-tune one on conversations.

    accelerate launch recipes/gpt2_clm.py --config recipes/configs/gpt2_clm/shakespeare_tiny.yaml [--key value ...]

Reads top to bottom: arguments -> accelerator and run folder -> text or conversations (preflight first)
-> tokenizer (given, or a byte-level BPE trained on the text; a chat template for conversations) ->
token blocks (cached), or tokenized conversations learning the replies -> model -> the shared training
loop -> final model, tokenizer, generation defaults and model card. The detail lives in ``tunelab``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from tunelab.args import CausalLMArguments, TrainingArguments, to_config
from tunelab.data.chat import (
    build_chat_data,
    chat_collator,
    chat_dataloaders,
    conversation_texts,
    ensure_chat_template,
    read_chat_splits,
    resolve_data_format,
)
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


def main(argv: list[str] | None = None) -> None:
    """The recipe; ``argv`` (default: the command line) as after the script's name."""
    lm_args, train_args = parse_or_exit((CausalLMArguments, TrainingArguments), argv)
    output_dir = resolve_output_dir(train_args, "clm")
    accelerator = build_accelerator(train_args, output_dir)
    main_process = accelerator.is_main_process
    setup_logging(output_dir, main_process)
    config = to_config(lm_args, train_args)
    run, events = open_run(output_dir, "clm", config, accelerator)
    cache_dir = Path(lm_args.cache_dir).expanduser() if lm_args.cache_dir else default_cache_dir()

    with guard(run, main_process):
        data_format = resolve_data_format(lm_args.train_file, lm_args.data_format)
        chat = data_format != "text"
        # Data: every file check runs before a tokenizer or a model is built, so bad input fails in seconds.
        with accelerator.main_process_first():
            if chat:
                splits, where = read_chat_splits(
                    lm_args.train_file,
                    lm_args.validation_file,
                    lm_args.test_file,
                    data_format,
                    lm_args.validation_split_percentage,
                    train_args.seed,
                )
                texts, text_key = conversation_texts(splits["train"]), f"{data_fingerprint_of(lm_args)}-chat"
            else:
                docs = load_lm_documents(
                    lm_args.train_file,
                    lm_args.validation_file,
                    lm_args.text_column,
                    lm_args.dataset_config_name,
                    lm_args.test_file,
                )
                texts, text_key = sample_text(docs.train), docs.train_key
        if main_process:
            run.update_status(stage="tokenizing")
        # The main process trains the tokenizer and tokenizes first; the others then read its cache.
        with accelerator.main_process_first():
            tokenizer_source = lm_args.tokenizer_name or lm_args.model_name_or_path
            if tokenizer_source:
                tokenizer = load_lm_tokenizer(tokenizer_source)
            else:
                tokenizer, hit = cached_bpe_tokenizer(
                    texts, lm_args.tokenizer_vocab_size, cache_dir, text_key
                )
                logger.info(
                    "Tokenizer: byte-level BPE, %d tokens (%s)",
                    len(tokenizer),
                    "from the cache" if hit else "trained on the training text",
                )
            if chat:
                if ensure_chat_template(tokenizer):
                    logger.info("Chat template: TuneLab's (role and end-of-turn tokens added)")
                data = build_chat_data(splits, where, tokenizer, lm_args.block_size, lm_args.train_on_prompt)
            else:
                data = build_lm_data(
                    docs,
                    tokenizer,
                    tokenizer_fingerprint(tokenizer),
                    lm_args.block_size,
                    lm_args.validation_split_percentage,
                    cache_dir,
                    lm_args.max_eval_samples,
                )
        if not chat and data.cache_hit:
            logger.info("Token cache hit in %s: tokenization skipped.", cache_dir / "tokens")
        logger.info("Data: %s", data.describe() if chat else describe_lm_data(data, lm_args.block_size))

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
        on_gpu = accelerator.device.type == "cuda"
        if chat:  # conversations padded per batch (not packed): the real tokens are counted
            train_dl, eval_dl = chat_dataloaders(
                data.train,
                data.validation,
                tokenizer.pad_token_id,
                train_args.per_device_train_batch_size,
                train_args.per_device_eval_batch_size,
                train_args.seed,
                on_gpu,
                train_args.dataloader_num_workers,
            )
        else:
            train_dl, eval_dl = lm_dataloaders(
                data,
                train_args.per_device_train_batch_size,
                train_args.per_device_eval_batch_size,
                on_gpu=on_gpu,
                num_workers=train_args.dataloader_num_workers,
            )
        task = Task(
            evaluate=lambda m, dl, final: evaluate_causal_lm(accelerator, m, dl),
            main_metric=train_args.metric_for_best_model or "loss",
            count_tokens=lambda batch: batch["attention_mask"].sum() if chat else batch["input_ids"].numel(),
            loss=lambda m, batch: m(batch["input_ids"], batch["targets"]),
            on_evaluate=lambda m, state: samples(accelerator, m, tokenizer, lm_args, state, chat),
            flops_per_token=flops_per_token(model, lm_args.block_size),
        )
        start_trackers(accelerator, train_args.report_to, output_dir, config)
        result = train(
            accelerator,
            train_args,
            CausalLMForTraining(model, train_args.label_smoothing, masked_targets=chat),
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
                data_summary=chat_summary(data, lm_args, result, tokenizer)
                if chat
                else {
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
                results={"tokens_seen": result.state.tokens_seen, "data_format": data_format}
                | (
                    {"train_tokens": data.train.tokens, "validation_tokens": data.validation.tokens}
                    if chat
                    else {"train_tokens": data.train_tokens, "validation_tokens": data.validation_tokens}
                ),
                seen=f"{result.state.tokens_seen:,} tokens",
                curve_note="; final validation perplexity "
                f"{result.metrics.get('eval/perplexity', float('nan')):.2f}",
            ),
            test=None
            if data.test is None
            else lambda: evaluate_test_blocks(
                accelerator,
                result.model,
                data.test,
                train_args.per_device_eval_batch_size,
                chat_collator(tokenizer.pad_token_id) if chat else None,
            ),
        )


def data_fingerprint_of(lm_args: CausalLMArguments) -> str:
    """The conversations file's cache key (its paths, sizes and times; a Hub id)."""
    from tunelab.data.files import resolve_source
    from tunelab.data.lm import LM_FORMATS, data_fingerprint

    source = resolve_source(lm_args.train_file, LM_FORMATS)
    return data_fingerprint(source, lm_args.text_column, lm_args.dataset_config_name)


def chat_summary(data, lm_args: CausalLMArguments, result, tokenizer) -> dict[str, str]:
    """The model card's training data rows of a chat fine-tuning run."""
    learned = "every token" if lm_args.train_on_prompt else "the assistant's replies only"
    return {
        "train": f"{len(data.train):,} conversations ({data.train.tokens:,} tokens) from {lm_args.train_file}",
        "validation": f"{len(data.validation):,} conversations ({data.validation_source})",
        **(
            {"test": f"{len(data.test):,} conversations ({lm_args.test_file})"}
            if data.test is not None
            else {}
        ),
        "loss on": learned,
        "tokens seen in training": f"{result.state.tokens_seen:,}",
        "tokenizer": f"{type(tokenizer).__name__}, {len(tokenizer)} tokens, with a chat template",
    }


def samples(accelerator, model, tokenizer, lm_args: CausalLMArguments, state, chat: bool) -> dict | None:
    """Continuations of sample_prompts (a chat run's: replies to them as a user's messages), every
    sample_every steps (default: each evaluation)."""
    if not lm_args.sample_prompts or not accelerator.is_main_process:
        return None
    at_end = state.global_step >= state.max_steps
    if lm_args.sample_every and state.global_step % lm_args.sample_every and not at_end:
        return None
    lm = accelerator.unwrap_model(model).model
    return {
        "samples": generate_samples(
            lm, tokenizer, lm_args.sample_prompts, lm_args.sample_max_new_tokens, chat=chat
        )
    }


if __name__ == "__main__":
    main()
