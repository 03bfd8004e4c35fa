"""Plain-text renderings of benchmark results for the terminal."""
from __future__ import annotations


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``bench_models`` rows, for the terminal."""
    head = (
        f"{'model':<24} {'params':>12} {'GFLOPs':>8} {'median ms':>10} {'IQR ms':>8} {'min-max ms':>17} "
        f"{'img/s':>9} {'peak MiB':>9} {'ratio':>6} {'(per round)':>12}"
    )
    lines = [head]
    for r in rows:
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "-"
        lines.append(
            f"{r['name']:<24} {r['params']:>12,} {r['gflops']:>8.3f} {r['median_ms']:>10.1f} {r['iqr_ms']:>8.1f} "
            f"{r['min_ms']:>8.1f}-{r['max_ms']:<8.1f} {r['images_per_s']:>9.1f} {mem:>9} {r['ratio_to_first']:>6.2f} "
            f"{_ratio_spread(r):>12}"
        )
    r0 = rows[0]
    extras = [x for x, on in (("channels_last", r0["channels_last"]), ("torch.compile", r0["compiled"]),
                              ("fused", r0["fused"])) if on]
    first = ", ".join(f"{r['name']} {r['first_call_ms'] / 1e3:.1f} s" for r in rows)
    lines.append(
        f"mode {r0['mode']}, device {r0['device']}, {r0['dtype']}{''.join(', ' + x for x in extras)}, "
        f"input {r0['input_size']}, batch {r0['batch']}, {r0['num_classes']} classes, {r0['repeats']} interleaved "
        f"rounds after {r0['warmup']} warm-up, {r0['threads']} thread{'s' if r0['threads'] != 1 else ''}; "
        f"GFLOPs per image (forward); peak memory: {r0['mem_kind']}; ratio = median / first model's median, "
        f"(per round) = the quartiles of the ratio round by round"
        + (f"; first call (compile): {first}" if r0["compiled"] else "")
    )
    return "\n".join(lines)


def format_data(row: dict) -> str:
    """A few plain-text lines for a ``bench_data`` result."""
    aug = ", ".join(row["augment"]) or "none"
    where = (f"augmented on the device in groups of {row['augment_group']}" if row.get("augment_on") == "device"
             else f"{row['workers']} worker(s)")
    return "\n".join([
        f"recipe {row['recipe']}: {row['dataset']} -> {row['image_size']}px (stored {row['stored_size']}px), "
        f"batch {row['batch']}, {where}, device {row['device']}",
        f"per-image augmentation: {aug}; Mixup/CutMix: {'yes' if row['mixing'] else 'no'}",
        f"{row['images_per_s']:,.1f} images/s; median {row['median_batch_ms']:.1f} ms per batch "
        f"(IQR {row['p25_ms']:.1f}-{row['p75_ms']:.1f}, min-max {row['min_ms']:.1f}-{row['max_ms']:.1f}) over "
        f"{row['batches']} batches after {row['warmup']} warm-up; first batch after {row['startup_s']:.2f} s",
    ])


def _ratio_spread(row: dict) -> str:
    """``p25-p75`` of a row's ratio to the first model, round by round (empty for rows without it)."""
    if "ratio_p25" not in row:
        return ""
    return f"{row['ratio_p25']:.3g}-{row['ratio_p75']:.3g}"
