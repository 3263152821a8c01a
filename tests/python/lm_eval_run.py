"""lm-evaluation-harness against a running `dlogp serve`: writes two tasks
over a local JSONL of sums (a generate_until task and a multiple_choice
one), runs `lm_eval --model local-completions` on them with the server's own
tokenizer (`tokenizer_backend=remote`: /tokenizer_info, /tokenize,
/detokenize; nothing is fetched from a model hub, which is also switched
off), and prints one JSON object: the command, lm-eval's results, and per
document what lm-eval sent and recorded, for the Rust test
(tests/it/clients.rs) to check against the server and `dlogp score`.
usage: lm_eval_run.py BASE_URL WORKDIR LIMIT SEED
The generation task runs a second time through `local-chat-completions`
(`--apply_chat_template`; the server applies the model's template).
"""
import glob
import json
import os
import subprocess
import sys

base_url, work, limit, seed = sys.argv[1:5]
GEN, MC = "dlogp_sum_gen", "dlogp_sum_mc"

docs = []
for i, (a, b) in enumerate([(3, 4), (2, 5), (6, 1), (4, 4), (7, 2), (1, 8), (5, 3), (9, 0)]):
    s = a + b
    docs.append({"a": a, "b": b, "answer": str(s), "choices": [str(s), str(s + 1), str(s - 1)],
                 "label": 0, "id": i})
data = os.path.join(work, "sums.jsonl")
with open(data, "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in docs)

tasks = os.path.join(work, "tasks")
os.makedirs(tasks, exist_ok=True)
common = f"""dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""
with open(os.path.join(tasks, f"{GEN}.yaml"), "w") as f:
    f.write(f"""task: {GEN}
{common}output_type: generate_until
doc_to_text: "Question: What is {{{{a}}}} + {{{{b}}}}?\\nAnswer:"
doc_to_target: " {{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: true
  temperature: 1.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_punctuation: true
    ignore_case: true
metadata:
  version: 1.0
""")
with open(os.path.join(tasks, f"{MC}.yaml"), "w") as f:
    f.write(f"""task: {MC}
{common}output_type: multiple_choice
doc_to_text: "{{{{a}}}} + {{{{b}}}} ="
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")

env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
           HF_HOME=os.path.join(work, "hf"), TOKENIZERS_PARALLELISM="false")


def lm_eval(name, model, model_args, task_names, extra=()):
    """Run the lm_eval CLI into WORKDIR/NAME; its command, printed table
    and output directory."""
    out_dir = os.path.join(work, name)
    cmd = [os.path.join(os.path.dirname(sys.executable), "lm_eval"),
           "--model", model, "--model_args", model_args,
           "--include_path", tasks, "--tasks", ",".join(task_names), "--limit", limit,
           "--output_path", out_dir, "--log_samples", *extra]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stderr.write(run.stderr[-4000:])
    if run.returncode != 0:
        sys.stderr.write(run.stdout[-4000:])
        sys.exit(f"lm_eval failed ({run.returncode}): {' '.join(cmd)}")
    return cmd, run.stdout, out_dir


def one(out_dir, pattern):
    found = glob.glob(os.path.join(out_dir, "**", pattern), recursive=True)
    if len(found) != 1:
        sys.exit(f"expected one {pattern} under {out_dir}, found {found}")
    return found[0]


# text completions: both tasks, the server's tokenizer
cmd, table, out_dir = lm_eval(
    "completions", "local-completions",
    f"base_url={base_url}/v1/completions,model=dlogp,tokenizer_backend=remote,"
    f"tokenized_requests=True,max_length=512,seed={seed}", [GEN, MC])
results = json.load(open(one(out_dir, "results_*.json")))
gen, mc = [], []
for line in open(one(out_dir, f"samples_{GEN}_*.jsonl")):
    s = json.loads(line)
    context, kwargs = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
    gen.append({"doc_id": s["doc_id"], "context": context, "gen_kwargs": kwargs,
                "response": s["resps"][0][0]})
for line in open(one(out_dir, f"samples_{MC}_*.jsonl")):
    s = json.loads(line)
    for k, (arg, resp) in enumerate(zip(s["arguments"].values(), s["resps"])):
        ll, greedy = resp[0]  # logged as strings
        mc.append({"doc_id": s["doc_id"], "choice": k, "context": arg["arg_0"],
                   "continuation": arg["arg_1"], "loglikelihood": float(ll),
                   "is_greedy": greedy in (True, "True")})

# chat completions: the generation task through the chat template
chat_cmd, chat_table, chat_dir = lm_eval(
    "chat", "local-chat-completions",
    f"base_url={base_url}/v1/chat/completions,model=dlogp,seed={seed}", [GEN],
    ["--apply_chat_template"])
chat = []
for line in open(one(chat_dir, f"samples_{GEN}_*.jsonl")):
    s = json.loads(line)
    (messages,), kwargs = s["arguments"]["gen_args_0"]["arg_0"], s["arguments"]["gen_args_0"]["arg_1"]
    chat.append({"doc_id": s["doc_id"], "messages": json.loads(messages), "gen_kwargs": kwargs,
                 "response": s["resps"][0][0]})
print(json.dumps({"command": cmd, "table": table, "results": results["results"],
                  "generate": gen, "loglikelihood": mc, "chat_command": chat_cmd,
                  "chat_table": chat_table, "chat_generate": chat}))
