"""Fine-tune a BERT-family encoder for sequence classification.

    accelerate launch recipes/bert_cls.py --config recipes/configs/bert_cls/sst2_minilm.yaml [--key value ...]

Reads top to bottom: arguments -> accelerator and run folder -> data (preflight first) -> model ->
the shared training loop -> final model, report and model card. The detail lives in ``tunelab``.
"""

from __future__ import annotations

import logging

from tunelab.args import ClassificationArguments, LoraArguments, TrainingArguments, to_config
from tunelab.data.augment import AugmentationArguments, augment_training_set, describe_augmentation
from tunelab.data.batching import classification_dataloaders, tokenize_classification
from tunelab.data.classification import (
    class_weights,
    classification_data,
    describe_data,
    imbalance_note,
)
from tunelab.data.clean import DataCleaningArguments, clean_classification_data, record_data_report
from tunelab.errors import ConfigError
from tunelab.models import (
    count_parameters,
    load_classifier,
    load_tokenizer,
    merge_lora,
    save_classifier,
    wrap_lora,
)
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
from tunelab.sparse_embeddings import enable_sparse_embeddings
from tunelab.train import Task, build_accelerator, classification_loss, train

logger = logging.getLogger("tunelab")


def main(argv: list[str] | None = None) -> None:
    """The recipe; ``argv`` (default: the command line) as after the script's name."""
    data_args, train_args, lora_args, clean_args, augment_args = parse_or_exit(
        (
            ClassificationArguments,
            TrainingArguments,
            LoraArguments,
            DataCleaningArguments,
            AugmentationArguments,
        ),
        argv,
    )
    output_dir = resolve_output_dir(train_args, "cls")
    accelerator = build_accelerator(train_args, output_dir)
    main_process = accelerator.is_main_process
    setup_logging(output_dir, main_process)
    config = to_config(data_args, train_args, lora_args, clean_args, augment_args)
    run, events = open_run(output_dir, "cls", config, accelerator)

    with guard(run, main_process):
        # Data: every check runs before a model is loaded, so bad input fails in seconds.
        with accelerator.main_process_first():
            data = classification_data({**vars(data_args), "seed": train_args.seed})
            # Cleaning and augmentation change the training split only; validation and test stay as given.
            cleaning, augmentation = clean_classification_data(data, clean_args), None
            if augment_args.enabled:
                data.train, augmentation = augment_training_set(
                    data.train, augment_args, data_args.model_name_or_path, train_args.seed
                )
        augmented = [describe_augmentation(augmentation)] if augmentation else []
        for line in cleaning.summary_lines() + augmented:
            logger.info("Data report: %s", line)
        data_lines = cleaning.summary_lines(only_found=True) + augmented  # for the model card
        if main_process:  # data_report.json and a "data" event
            record_data_report(output_dir, events, cleaning, augmentation)
        logger.info("Data: %s", describe_data(data))
        regression = data.problem_type == "regression"
        if data.problem_type != "single_label" and train_args.label_smoothing:
            raise ConfigError(
                f"label_smoothing applies to one class per text; this run is {data.problem_type}."
            )
        weights = class_weights(data_args.class_weights, data)
        if weights is not None:
            logger.info(
                "Class weights: %s",
                ", ".join(f"{k} {w:.3g}" for k, w in zip(data.labels, weights, strict=True)),
            )
        note = imbalance_note(data.train_report.label_counts, data.train_report.rows)
        if note and weights is None:
            logger.warning("Data: %s", note)
        tokenizer = load_tokenizer(data_args.model_name_or_path)
        if main_process:
            run.update_status(stage="tokenizing")
        with accelerator.main_process_first():
            train_set, truncated = tokenize_classification(data.train, tokenizer, data_args.max_length)
            eval_set, _ = tokenize_classification(data.validation, tokenizer, data_args.max_length)
        if truncated:
            logger.info(
                "%d of %d training texts were longer than max_length=%d and were truncated.",
                truncated,
                len(train_set),
                data_args.max_length,
            )

        from tunelab.metrics import (  # imports `evaluate` (~slow): only after preflight
            evaluate_classifier,
            evaluate_test_set,
        )

        model = load_classifier(
            data_args.model_name_or_path, data.labels, data_args.dropout_overrides(), data.problem_type
        )
        logger.info("Model: %s (%s parameters)", data_args.model_name_or_path, f"{count_parameters(model):,}")
        if data_args.freeze_embeddings:
            model.get_input_embeddings().requires_grad_(False)
        if lora_args.use_peft:
            model = wrap_lora(
                model,
                "SEQ_CLS",
                lora_args.lora_r,
                lora_args.lora_alpha,
                lora_args.lora_dropout,
                lora_args.lora_target_modules,
            )

        if data_args.sparse_embeddings:  # after LoRA, which freezes them: then they stay dense
            enable_sparse_embeddings(model, train_args, accelerator.num_processes)

        train_dl, eval_dl = classification_dataloaders(
            train_set,
            eval_set,
            tokenizer,
            train_args.per_device_train_batch_size,
            train_args.per_device_eval_batch_size,
            data_args.group_by_length,
            train_args.seed,
            on_gpu=accelerator.device.type == "cuda",
            num_workers=train_args.dataloader_num_workers,
        )
        task = Task(
            evaluate=lambda m, dl, final: evaluate_classifier(
                accelerator,
                m,
                dl,
                data.labels,
                detailed=final,
                problem_type=data.problem_type,
                threshold=data_args.threshold,
                tune=final and data_args.tune_thresholds,  # the saved model's thresholds
            ),
            main_metric=train_args.metric_for_best_model
            or {"regression": "rmse", "multi_label": "f1_micro"}.get(data.problem_type, "accuracy"),
            count_tokens=lambda batch: batch["attention_mask"].sum(),
            loss=classification_loss(train_args.label_smoothing, weights, data.multi_label),
        )
        start_trackers(accelerator, train_args.report_to, output_dir, config)
        result = train(accelerator, train_args, model, train_dl, eval_dl, task, output_dir, events)
        # multi_label: the thresholds the final evaluation decided at (tuned on validation when asked)
        thresholds = (
            result.metrics.get("thresholds") or dict.fromkeys(data.labels, data_args.threshold)
            if data.multi_label
            else None
        )
        finish_run(
            accelerator,
            run,
            result,
            config,
            lambda folder: save_classifier(merge_lora(result.model), tokenizer, folder, thresholds),
            lambda: RunReport(
                "text-classification",
                data_args.model_name_or_path,
                data.validation_source,
                data_summary={
                    "train": f"{len(data.train)} examples from {data_args.train_file}",
                    "validation": f"{len(data.validation)} examples ({data.validation_source})",
                    **(
                        {"test": f"{len(data.test)} examples ({data_args.test_file})"}
                        if data.test is not None
                        else {}
                    ),
                    "labels": f"regression target {data.labels[0]!r} {data.train_report.describe_target()}"
                    if regression
                    else ("multi_label: " if data.multi_label else "")
                    + ", ".join(f"{i}: {name}" for i, name in enumerate(data.labels)),
                    **({"cleaning and augmentation": "; ".join(data_lines)} if data_lines else {}),
                },
                results={"labels": data.labels, "problem_type": data.problem_type},
            ),
            test=None
            if data.test is None
            else lambda: evaluate_test_set(
                accelerator,
                result.model,
                tokenizer,
                data,
                data_args.max_length,
                train_args.per_device_eval_batch_size,
                output_dir,
                thresholds,
            ),
        )


if __name__ == "__main__":
    main()
