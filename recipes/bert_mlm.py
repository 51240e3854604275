"""Adapt a BERT-family encoder to your domain: continue its masked-language-model pretraining on your text.

    accelerate launch recipes/bert_mlm.py --config recipes/configs/bert_mlm/python_docs_minilm.yaml [--key value ...]

Then fine-tune the adapted encoder: ``accelerate launch recipes/bert_cls.py --model_name_or_path <this run>``.
Reads top to bottom: arguments -> accelerator and run folder -> texts (preflight first) -> tokenizer ->
examples (line by line, or blocks) and one fixed masking of the validation set -> model -> the base
model's score on those masks -> the shared training loop -> final model, report and model card.
"""

from __future__ import annotations

import logging

from tunelab.args import TrainingArguments, to_config
from tunelab.data.mlm import describe_mlm_data, load_mlm_texts, mask_once, mlm_dataloaders, tokenize_mlm
from tunelab.mlm import (
    MaskedLMArguments,
    MaskedLMForTraining,
    check_tokenizer,
    evaluate_before_training,
    evaluate_masked_lm,
    flops_per_token,
    load_masked_lm,
    pooler_weights,
    save_masked_lm,
)
from tunelab.models import count_parameters, load_tokenizer
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
    mlm_args, train_args = parse_or_exit((MaskedLMArguments, TrainingArguments), argv)
    output_dir = resolve_output_dir(train_args, "mlm")
    accelerator = build_accelerator(train_args, output_dir)
    main_process = accelerator.is_main_process
    setup_logging(output_dir, main_process)
    config = to_config(mlm_args, train_args)
    run, events = open_run(output_dir, "mlm", config, accelerator)

    with guard(run, main_process):
        # Data: every file check runs before a model is loaded, so bad input fails in seconds.
        with accelerator.main_process_first():
            texts = load_mlm_texts(
                mlm_args.train_file,
                mlm_args.validation_file,
                mlm_args.text_column,
                mlm_args.dataset_config_name,
                mlm_args.validation_split_percentage,
            )
        tokenizer = load_tokenizer(mlm_args.model_name_or_path)
        check_tokenizer(tokenizer, mlm_args.model_name_or_path, mlm_args.whole_word_mask)
        if main_process:
            run.update_status(stage="tokenizing")
        with accelerator.main_process_first():
            train_set = tokenize_mlm(
                texts.train,
                tokenizer,
                mlm_args.max_seq_length,
                mlm_args.line_by_line,
                mlm_args.whole_word_mask,
                texts.train_where,
                mlm_args.max_train_samples,
            )
            eval_set = tokenize_mlm(
                texts.validation,
                tokenizer,
                mlm_args.max_seq_length,
                mlm_args.line_by_line,
                mlm_args.whole_word_mask,
                texts.validation_source,
                mlm_args.max_eval_samples,
            )
        # One masking of the validation set from a fixed seed: every evaluation scores the same tokens.
        eval_examples = mask_once(eval_set, tokenizer, mlm_args.mlm_probability, mlm_args.whole_word_mask)
        logger.info(
            "Data: %s",
            describe_mlm_data(
                texts, train_set, eval_examples, mlm_args.max_seq_length, mlm_args.line_by_line
            ),
        )

        model = load_masked_lm(
            mlm_args.model_name_or_path, mlm_args.max_seq_length, mlm_args.dropout_overrides()
        )
        logger.info("Model: %s (%s parameters)", mlm_args.model_name_or_path, f"{count_parameters(model):,}")
        train_dl, eval_dl = mlm_dataloaders(
            train_set,
            eval_examples,
            tokenizer,
            mlm_args.mlm_probability,
            mlm_args.whole_word_mask,
            train_args.per_device_train_batch_size,
            train_args.per_device_eval_batch_size,
            on_gpu=accelerator.device.type == "cuda",
            num_workers=train_args.dataloader_num_workers,
        )
        wrapped = MaskedLMForTraining(model, train_args.label_smoothing)
        before = None
        if mlm_args.evaluate_before_training and not train_args.resume_from_checkpoint:
            if main_process:
                run.update_status(stage="evaluating the base model")
            before = evaluate_before_training(accelerator, wrapped, eval_dl)
            logger.info("step 0 (base model): %s", ", ".join(f"{k}={v:.4f}" for k, v in before.items()))
            if main_process and events:
                events.write("eval", step=0, epoch=0, **before)
        task = Task(
            evaluate=lambda m, dl, final: evaluate_masked_lm(accelerator, m, dl),
            main_metric=train_args.metric_for_best_model or "loss",
            count_tokens=lambda batch: batch["attention_mask"].sum(),
            loss=lambda m, batch: m(**batch),
            flops_per_token=flops_per_token(model, mlm_args.mlm_probability),
        )
        start_trackers(accelerator, train_args.report_to, output_dir, config)
        result = train(accelerator, train_args, wrapped, train_dl, eval_dl, task, output_dir, events)
        unit = "texts" if mlm_args.line_by_line else f"blocks of {mlm_args.max_seq_length} tokens"
        finish_run(
            accelerator,
            run,
            result,
            config,
            lambda folder: save_masked_lm(
                result.model.model,
                tokenizer,
                folder,
                pooler_weights(mlm_args.model_name_or_path, result.model.model.base_model_prefix),
            ),
            lambda: RunReport(
                "fill-mask",
                mlm_args.model_name_or_path,
                texts.validation_source,
                data_summary={
                    "train": f"{len(texts.train):,} texts from {mlm_args.train_file} ({len(train_set):,} {unit})",
                    "validation": f"{len(eval_examples):,} examples ({texts.validation_source}), masked once "
                    "from a fixed seed",
                    "masking": f"{mlm_args.mlm_probability:g} of the tokens"
                    + (", whole words" if mlm_args.whole_word_mask else ""),
                },
                results={f"{k}_before": v for k, v in (before or {}).items()},
                seen=f"{result.state.samples_seen:,} examples",
                curve_note="; validation masked-LM perplexity "
                f"{result.metrics.get('eval/perplexity', float('nan')):.2f}"
                + (f" (base model: {before['eval/perplexity']:.2f})" if before else "")
                + ". Fine-tune it with recipes/bert_cls.py --model_name_or_path <this folder>",
            ),
        )


if __name__ == "__main__":
    main()
