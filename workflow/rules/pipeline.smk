rule init_tracking:
    output:
        f"{RESULTS}/tracking.json",
    log:
        f"logs/{STUDY}/init_tracking.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 1000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        config=lambda w: as_json(config),
    shell:
        "python -m motifpipe init-tracking --config {params.config:q} --out {output} > {log} 2>&1"


rule generate:
    input:
        task_files,
    output:
        f"{JOB}/data.safetensors",
    log:
        f"logs/{STUDY}/generate/{{task}}_n{{n}}_seed{{seed}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        task=lambda w: as_json(TASKS[w.task]["task"]),
        val=config["split"]["val"],
        test=config["split"]["test"],
    shell:
        "python -m motifpipe generate --task {wildcards.task} --n {wildcards.n}"
        " --seed {wildcards.seed} --params {params.task:q} --val {params.val}"
        " --test {params.test} --out {output} > {log} 2>&1"


rule fit_baseline:
    input:
        data=data_file,
        tracking=f"{RESULTS}/tracking.json",
    output:
        model=f"{JOB}/baseline.safetensors",
        result=f"{JOB}/baseline.json",
    log:
        f"logs/{STUDY}/fit_baseline/{{task}}_n{{n}}_seed{{seed}}.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        baseline=lambda w: as_json(TASKS[w.task]["baseline"]),
    shell:
        "python -m motifpipe fit-baseline --task {wildcards.task} --n {wildcards.n}"
        " --seed {wildcards.seed} --data {input.data} --params {params.baseline:q}"
        " --tracking {input.tracking} --out-model {output.model}"
        " --out-json {output.result} > {log} 2>&1"


rule transfer:
    input:
        baseline=f"{JOB}/baseline.safetensors",
        data=data_file,
        tracking=f"{RESULTS}/tracking.json",
    output:
        net=f"{JOB}/network.safetensors",
        result=f"{JOB}/transfer.json",
    log:
        f"logs/{STUDY}/transfer/{{task}}_n{{n}}_seed{{seed}}.log",
    priority: 10
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    params:
        transfer=lambda w: as_json(config["transfer"]),
    shell:
        "python -m motifpipe transfer --task {wildcards.task} --n {wildcards.n}"
        " --seed {wildcards.seed} --baseline {input.baseline} --data {input.data}"
        " --params {params.transfer:q} --tracking {input.tracking}"
        " --out-net {output.net} --out-json {output.result} > {log} 2>&1"


if config["arms"] and not config["group_arms"]:

    rule train:
        input:
            unpack(train_inputs),
        output:
            net=f"{JOB}/train/{{arm}}.safetensors",
            curve=f"{JOB}/train/{{arm}}.curve.csv",
            result=f"{JOB}/train/{{arm}}.json",
        log:
            f"logs/{STUDY}/train/{{task}}_n{{n}}_seed{{seed}}_{{arm}}.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 4000 * attempt,
            runtime=lambda wc, attempt: 120 * attempt,
            gpu=lambda wc: wants_gpu([wc.arm]),
        params:
            train=lambda w: arm_settings([w.arm]),
            mlp=lambda w: as_json(config["mlp"]),
            deepsets=lambda w: as_json(config["deepsets"]),
            network=network_flag,
            out_dir=lambda w, output: os.path.dirname(output.result),
        shell:
            "python -m motifpipe train --arm {wildcards.arm} --task {wildcards.task}"
            " --n {wildcards.n} --seed {wildcards.seed} --data {input.data}"
            " --baseline {input.baseline} {params.network} --params {params.train:q}"
            " --mlp {params.mlp:q} --deepsets {params.deepsets:q} --tracking {input.tracking} --threads {threads}"
            " --out-dir {params.out_dir} > {log} 2>&1"

elif config["arms"]:

    # One job per (task, n, seed) trains every arm in turn: the ~6 s of imports and
    # MLflow set-up a training process pays is paid once instead of once per arm.
    rule train_arms:
        input:
            unpack(train_inputs),
        output:
            [
                f"{JOB}/train/{arm}.{ext}"
                for arm in config["arms"]
                for ext in ("safetensors", "curve.csv", "json")
            ],
        log:
            f"logs/{STUDY}/train/{{task}}_n{{n}}_seed{{seed}}.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 4000 * attempt,
            runtime=lambda wc, attempt: 120 * len(config["arms"]) * attempt,
            gpu=lambda wc: wants_gpu(config["arms"]),
        params:
            arms=" ".join(f"--arm {arm}" for arm in config["arms"]),
            train=lambda w: arm_settings(config["arms"]),
            mlp=lambda w: as_json(config["mlp"]),
            deepsets=lambda w: as_json(config["deepsets"]),
            network=network_flag,
            out_dir=lambda w, output: os.path.dirname(output[0]),
        shell:
            "python -m motifpipe train {params.arms} --task {wildcards.task}"
            " --n {wildcards.n} --seed {wildcards.seed} --data {input.data}"
            " --baseline {input.baseline} {params.network} --params {params.train:q}"
            " --mlp {params.mlp:q} --deepsets {params.deepsets:q} --tracking {input.tracking} --threads {threads}"
            " --out-dir {params.out_dir} > {log} 2>&1"


rule evaluate:
    input:
        job_results,
    output:
        f"{RESULTS}/summary.csv",
    log:
        f"logs/{STUDY}/evaluate.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        config=lambda w: as_json(config),
    shell:
        "python -m motifpipe evaluate {input} --config {params.config:q} --out {output}"
        " > {log} 2>&1"


rule report:
    input:
        summary=f"{RESULTS}/summary.csv",
        curves=curves,
        heatmaps=heatmap_inputs,
        tracking=f"{RESULTS}/tracking.json",
    output:
        html=f"{REPORTS}/report.html",
        slopes=f"{REPORTS}/slopes.csv",
        figures=[
            report(
                f"{REPORTS}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in FIGURES
        ],
    log:
        f"logs/{STUDY}/report.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        config=lambda w: as_json(config),
        heatmaps=" ".join(f"--heatmap-dir {JOB.format(**j)}" for j in HEATMAPS),
        fig_dir=lambda w, output: os.path.dirname(output.figures[0]),
    shell:
        "python -m motifpipe report --summary {input.summary} --curves {input.curves}"
        " {params.heatmaps} --tracking {input.tracking} --config {params.config:q}"
        " --out-html {output.html} --out-slopes {output.slopes}"
        " --fig-dir {params.fig_dir} > {log} 2>&1"
