"""Distill a fine-tuned classifier (the teacher) into a smaller student.

    accelerate launch recipes/distill_cls.py --config recipes/configs/distill_cls/sst2_minilm_3layer.yaml \
        --teacher_name_or_path runs/<a finished cls run>

Reads top to bottom: arguments -> accelerator and run folder -> data (preflight first) and the teacher's
labels -> student (the teacher with every other layer, by default) -> the teacher's logits, once ->
the shared training loop with the distillation loss -> final student, teacher-vs-student report, card.
The detail lives in ``tunelab.distill``.
"""

from __future__ import annotations

import gc
import logging

from tunelab.args import (
    EMBEDDED_ENCODER,
    ClassificationArguments,
    TrainingArguments,
    default_runs_dir,
    to_config,
)
from tunelab.data.batching import classification_dataloaders, tokenize_classification
from tunelab.data.classification import (
    classification_data,
    describe_data,
)
from tunelab.distill import (
    TEACHER_LOGITS_FILE,
    DistillationArguments,
    align_labels,
    comparison_table,
    cpu_latency,
    distillation_dataloader,
    distillation_loss,
    layer_dropped_student,
    layers_to_keep,
    load_student,
    load_teacher,
    load_unlabeled,
    ratios,
    same_tokenizer,
    teacher_logits,
    transfer_set,
    with_teacher_logits,
)
from tunelab.errors import ConfigError
from tunelab.measure import weights_size
from tunelab.models import count_parameters, load_tokenizer, save_classifier
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
from tunelab.train import Task, build_accelerator, train

logger = logging.getLogger("tunelab")


def main(argv: list[str] | None = None) -> None:
    """The recipe; ``argv`` (default: the command line) as after the script's name."""
    data_args, train_args, kd_args = parse_or_exit(
        (ClassificationArguments, TrainingArguments, DistillationArguments),
        argv,
    )
    output_dir = resolve_output_dir(train_args, "distill")
    accelerator = build_accelerator(train_args, output_dir)
    main_process = accelerator.is_main_process
    setup_logging(output_dir, main_process)
    config = to_config(data_args, train_args, kd_args)
    # The student comes from teacher_name_or_path / student_name_or_path; model_name_or_path is unused.
    config["model_name_or_path"] = None
    run, events = open_run(output_dir, "distill", config, accelerator)

    with guard(run, main_process):
        if data_args.class_weights.strip() != "none":  # the teacher's soft labels carry the balance
            raise ConfigError(
                "class_weights applies to bert_cls.py; a student learns the teacher's probabilities "
                "(train the teacher with class_weights instead)."
            )
        if data_args.model_name_or_path != EMBEDDED_ENCODER:
            raise ConfigError(
                "distill_cls.py takes teacher_name_or_path (and optionally student_name_or_path), "
                "not model_name_or_path."
            )
        # Data: every check runs before a model is loaded, so bad input fails in seconds.
        with accelerator.main_process_first():
            data = classification_data({**vars(data_args), "seed": train_args.seed})
            if data.problem_type != "single_label":  # the KD loss compares class distributions
                raise ConfigError(
                    f"distill_cls.py distills classifiers; this training file's target is a "
                    f"{data.problem_type} one. Set problem_type single_label if its labels are classes."
                )
            unlabeled = (
                load_unlabeled(
                    kd_args.unlabeled_file,
                    data.columns,
                    kd_args.max_unlabeled_samples,
                    train_args.seed,
                    labeled=data.train,
                )
                if kd_args.unlabeled_file
                else None
            )
        logger.info("Data: %s", describe_data(data))

        # Teacher and student. Labels follow the teacher's ids; a student must predict the same set.
        teacher, teacher_path, labels = load_teacher(kd_args.teacher_name_or_path, default_runs_dir())
        data = align_labels(data, labels, data_args.train_file)
        teacher_tokenizer = load_tokenizer(teacher_path)
        if kd_args.student_name_or_path:
            student = load_student(kd_args.student_name_or_path, labels, data_args.dropout_overrides())
            tokenizer = load_tokenizer(kd_args.student_name_or_path)
            kept = None
        else:
            kept = layers_to_keep(
                teacher.config.num_hidden_layers, kd_args.student_layers, kd_args.student_num_layers
            )
            student = layer_dropped_student(teacher, kept, data_args.dropout_overrides())
            tokenizer = teacher_tokenizer
        logger.info(
            "Teacher: %s (%d layers, %s parameters); student: %s (%d layers, %s parameters)",
            teacher_path,
            teacher.config.num_hidden_layers,
            f"{count_parameters(teacher):,}",
            kd_args.student_name_or_path or f"the teacher's layers {kept}",
            student.config.num_hidden_layers,
            f"{count_parameters(student):,}",
        )
        if data_args.freeze_embeddings:
            student.get_input_embeddings().requires_grad_(False)
        if data_args.sparse_embeddings:
            enable_sparse_embeddings(student, train_args, accelerator.num_processes)

        if main_process:
            run.update_status(stage="tokenizing")
        transfer = transfer_set(data.train, unlabeled)
        shared_tokens = same_tokenizer(tokenizer, teacher_tokenizer)
        with accelerator.main_process_first():
            train_set, _ = tokenize_classification(transfer, tokenizer, data_args.max_length)
            eval_set, _ = tokenize_classification(data.validation, tokenizer, data_args.max_length)
            teacher_train, teacher_eval = train_set, eval_set
            if not shared_tokens:  # the teacher reads its own token ids
                teacher_train, _ = tokenize_classification(transfer, teacher_tokenizer, data_args.max_length)
                teacher_eval, _ = tokenize_classification(
                    data.validation, teacher_tokenizer, data_args.max_length
                )

        from tunelab.metrics import evaluate_classifier  # imports `evaluate` (~slow): only after preflight

        # The teacher runs once: its logits become a column of the training set, then it leaves memory.
        if main_process:
            run.update_status(stage="teacher logits")
        logits, forwarded = teacher_logits(
            accelerator,
            teacher,
            teacher_path,
            teacher_train,
            teacher_tokenizer,
            train_args.per_device_eval_batch_size,
            output_dir,
        )
        teacher_metrics = evaluate_teacher(
            accelerator, teacher, teacher_eval, teacher_tokenizer, train_args, labels
        )
        logger.info("Teacher on validation: accuracy %.4f", teacher_metrics["eval/accuracy"])
        del teacher
        gc.collect()
        train_set = with_teacher_logits(train_set, logits)

        on_gpu = accelerator.device.type == "cuda"
        train_dl = distillation_dataloader(
            train_set,
            tokenizer,
            train_args.per_device_train_batch_size,
            data_args.group_by_length,
            train_args.seed,
            on_gpu,
            train_args.dataloader_num_workers,
        )
        _, eval_dl = classification_dataloaders(
            eval_set,
            eval_set,
            tokenizer,
            1,
            train_args.per_device_eval_batch_size,
            False,
            train_args.seed,
            on_gpu,
        )
        task = Task(
            evaluate=lambda m, dl, final: evaluate_classifier(accelerator, m, dl, labels, detailed=final),
            main_metric=train_args.metric_for_best_model or "accuracy",
            count_tokens=lambda batch: batch["attention_mask"].sum(),
            loss=distillation_loss(kd_args.temperature, kd_args.alpha, train_args.label_smoothing),
        )
        start_trackers(accelerator, train_args.report_to, output_dir, config)
        result = train(accelerator, train_args, student, train_dl, eval_dl, task, output_dir, events)

        def report() -> RunReport:
            run.update_status(stage="measuring")
            summary = {
                "teacher": teacher_path,
                "student_init": kd_args.student_name_or_path or f"teacher layers {kept}",
                "student_layers": kept,
                "temperature": kd_args.temperature,
                "alpha": kd_args.alpha,
                "labeled_examples": len(data.train),
                "unlabeled_examples": len(unlabeled) if unlabeled is not None else 0,
                "teacher_examples_forwarded": forwarded,
                "teacher_logits_cache": TEACHER_LOGITS_FILE,
            }
            sides = compare(
                teacher_path, output_dir, teacher_metrics, result.metrics, data, data_args, kd_args
            )
            logger.info("Teacher vs student:\n%s", comparison_table(sides["teacher"], sides["student"]))
            return distillation_report(data, config, summary, sides)

        finish_run(
            accelerator,
            run,
            result,
            config,
            lambda folder: save_classifier(result.model, tokenizer, folder),
            report,
        )


def evaluate_teacher(accelerator, teacher, eval_set, tokenizer, train_args, labels) -> dict:
    """The teacher's validation scores, with the student's evaluation code and batches."""
    from tunelab.metrics import evaluate_classifier

    _, eval_dl = classification_dataloaders(
        eval_set,
        eval_set,
        tokenizer,
        1,
        train_args.per_device_eval_batch_size,
        False,
        train_args.seed,
        on_gpu=accelerator.device.type == "cuda",
    )
    with accelerator.autocast():
        return evaluate_classifier(accelerator, teacher, accelerator.prepare(eval_dl), labels)


def compare(teacher_path, student_dir, teacher_metrics, student_metrics, data, data_args, kd_args) -> dict:
    """Teacher vs student as saved on disk: accuracy, parameters, size, CPU latency (same timing code)."""
    from transformers import AutoModelForSequenceClassification

    models = {
        name: (AutoModelForSequenceClassification.from_pretrained(path), load_tokenizer(str(path)))
        for name, path in (("teacher", teacher_path), ("student", student_dir))
    }
    side = {
        "teacher": {"path": str(teacher_path), "eval/accuracy": teacher_metrics["eval/accuracy"]},
        "student": {"path": str(student_dir), "eval/accuracy": student_metrics["eval/accuracy"]},
    }
    for name, path in (("teacher", teacher_path), ("student", student_dir)):
        model = models[name][0]
        side[name].update(
            layers=model.config.num_hidden_layers,
            parameters=count_parameters(model),
            size_mb=weights_size(path) / 2**20,
        )
    if kd_args.latency_samples:
        validation = data.validation.select(range(min(kd_args.latency_samples, len(data.validation))))
        texts = (
            list(zip(validation["text"], validation["text_pair"], strict=True))
            if "text_pair" in validation.column_names
            else list(validation["text"])
        )
        for name, timing in cpu_latency(models, texts, data_args.max_length).items():
            side[name].update(timing)
    return {**side, "ratios": ratios(side["teacher"], side["student"])}


def distillation_report(data, config, summary, sides) -> RunReport:
    """eval_results.json's distillation entries (the student's scores stay at the top, as bert_cls writes
    them) and the card's teacher-vs-student section."""
    origin = (
        f"Distilled from the teacher `{summary['teacher']}` ({sides['teacher']['layers']} layers) into a "
        f"student initialised from {summary['student_init']}, with loss alpha * CE + (1 - alpha) * T^2 * KL "
        f"(alpha {summary['alpha']}, T {summary['temperature']}). The teacher's logits were computed once "
        f"({summary['teacher_examples_forwarded']} examples) before training."
    )
    if "latency_threads" in sides["student"]:
        origin += (
            f" Latency: CPU, fp32, {sides['student']['latency_threads']} threads, per example, batches "
            "padded to their longest; the models took turns, median of 3 repeats."
        )
    return RunReport(
        "text-classification",
        config["student_name_or_path"] or config["teacher_name_or_path"],
        data.validation_source,
        data_summary={
            "train": f"{len(data.train)} labeled examples from {config['train_file']}",
            "unlabeled (teacher-labeled)": f"{summary['unlabeled_examples']} examples"
            + (f" from {config['unlabeled_file']}" if config["unlabeled_file"] else ""),
            "validation": f"{len(data.validation)} examples ({data.validation_source})",
            "labels": ", ".join(f"{i}: {name}" for i, name in enumerate(data.labels)),
        },
        results={"labels": data.labels, "distillation": summary, **sides},
        extra_sections={
            "Distillation: teacher vs student": origin
            + "\n\n"
            + comparison_table(sides["teacher"], sides["student"])
        },
    )


if __name__ == "__main__":
    main()
