/*
 * A llama.cpp host program that uses libdlogp's sampler: it loads the RL
 * model, decodes the prompt, and generates with the dlogp sampler in a
 * sampler chain. Then it checks clone (a copy taken after the prompt
 * generates the same tokens) and reset (a reset sampler fed the prompt again
 * generates the same tokens), the plugin's pointer and ABI checks, and the
 * composable mode: the plugin with top-k 1 writing its distribution into a
 * chain whose own `dist` sampler draws (a point mass, so the tokens are
 * those of `dlogp generate --top-k 1`).
 *
 * usage: host RL.gguf BASE.gguf PROMPT N_PREDICT SEED MODE TAU GAMMA [LORA.gguf]
 * (with LORA, the RL model is RL.gguf + that adapter at scale 1)
 * With DLOGP_HOST_SHARED=1 (a host linked to the shared libdlogp and its
 * libllama; needs LORA and RL.gguf = BASE.gguf) the plugin runs on the
 * host's own model (dlogp_sampler_init_shared): one copy of the weights.
 * prints: "tokens: t1 t2 ..." (the chain's), "clone: ...", "reset: ...",
 *         "stats: n_decided n_fired", "compose: ..." (top-k 1, composed),
 *         "memory: PEAK_RSS_KIB PSS_KIB" (after the first generation, one
 *         dlogp sampler loaded), "checks: ok"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"
#include "dlogp.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

/* Decode the prompt into a cleared context, then sample up to n tokens. */
static int generate(struct llama_context *ctx, const struct llama_vocab *vocab,
                    struct llama_sampler *smpl, llama_token *prompt, int n_prompt,
                    int n_predict, llama_token *out) {
    llama_memory_clear(llama_get_memory(ctx), true);
    if (llama_decode(ctx, llama_batch_get_one(prompt, n_prompt)) != 0) {
        fprintf(stderr, "prompt decode failed\n");
        exit(1);
    }
    int n = 0;
    while (n < n_predict) {
        llama_token t = llama_sampler_sample(smpl, ctx, -1);
        out[n++] = t;
        if (llama_vocab_is_eog(vocab, t)) break;
        if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) {
            fprintf(stderr, "decode failed\n");
            exit(1);
        }
    }
    return n;
}

/* A "KEY: N kB" line of a /proc file (Linux), or -1. VmHWM (peak RSS) of
 * /proc/self/status rather than getrusage's ru_maxrss, which keeps the
 * parent's peak across fork and exec (a test harness's, here). */
static long proc_kib(const char *file, const char *key) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) == 0 && sscanf(line + n, " %ld kB", &kib) == 1) break;
    }
    fclose(f);
    return kib;
}

static int shared;              /* DLOGP_HOST_SHARED=1 */
static struct llama_model *host_model;

/* A dlogp sampler: the plugin loads the base, or uses the host's model. */
static struct llama_sampler *make_dlogp(const char *base_path, const struct dlogp_params *p) {
    return shared ? dlogp_sampler_init_shared(host_model, base_path, p)
                  : dlogp_sampler_init(base_path, p);
}

static void print_tokens(const char *label, const llama_token *t, int n) {
    printf("%s:", label);
    for (int i = 0; i < n; i++) printf(" %d", t[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc != 9 && argc != 10) {
        fprintf(stderr, "usage: %s RL.gguf BASE.gguf PROMPT N_PREDICT SEED MODE TAU GAMMA [LORA.gguf]\n", argv[0]);
        return 2;
    }
    const char *rl_path = argv[1], *base_path = argv[2], *text = argv[3];
    int n_predict = atoi(argv[4]);
    const char *sh = getenv("DLOGP_HOST_SHARED");
    shared = sh && strcmp(sh, "1") == 0;
    if (shared && (argc != 10 || strcmp(rl_path, base_path) != 0)) {
        fprintf(stderr, "DLOGP_HOST_SHARED=1 needs a LoRA pair: RL.gguf = BASE.gguf and LORA.gguf\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(rl_path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", rl_path); return 1; }
    host_model = model;
    const struct llama_vocab *vocab = llama_model_get_vocab(model);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
    if (argc == 10) {
        struct llama_adapter_lora *lora = llama_adapter_lora_init(model, argv[9]);
        float scale = 1.0f;
        if (!lora || llama_set_adapters_lora(ctx, &lora, 1, &scale) != 0) {
            fprintf(stderr, "cannot apply %s\n", argv[9]);
            return 1;
        }
    }

    llama_token prompt[256];
    int n_prompt = llama_tokenize(vocab, text, (int32_t)strlen(text), prompt, 256, true, true);
    if (n_prompt <= 0) { fprintf(stderr, "tokenize failed\n"); return 1; }

    struct dlogp_params p = dlogp_params_default();
    p.abi = DLOGP_HOST_ABI;
    p.seed = strtoull(argv[5], NULL, 10);
    p.mode = atoi(argv[6]);
    p.tau = atof(argv[7]);
    p.gamma = atof(argv[8]);
    p.n_ctx = 256;
    p.n_threads = 1;

    /* pointer and argument checks: errors, never crashes */
    int checks = 1;
    checks &= dlogp_abi_version() == DLOGP_ABI_VERSION;
    struct dlogp_abi abi = DLOGP_HOST_ABI;
    checks &= dlogp_abi_check(&abi) == 0;
    checks &= dlogp_abi_check(NULL) == -1;
    struct dlogp_params no_abi = p;
    memset(&no_abi.abi, 0, sizeof no_abi.abi);
    checks &= dlogp_sampler_init(base_path, &no_abi) == NULL && strstr(dlogp_last_error(), "DLOGP_HOST_ABI") != NULL;
    struct dlogp_params other_abi = p;
    other_abi.abi.size_sampler_i += 8; /* a llama.cpp with one more callback */
    checks &= dlogp_sampler_init(base_path, &other_abi) == NULL && strstr(dlogp_last_error(), "llama_sampler_i") != NULL;
    checks &= dlogp_sampler_init(base_path, NULL) == NULL;
    checks &= dlogp_sampler_init(NULL, &p) == NULL && strlen(dlogp_last_error()) > 0;
    checks &= dlogp_sampler_init("/nonexistent.gguf", &p) == NULL;
    struct dlogp_params bad = p;
    bad.mode = 99;
    checks &= dlogp_sampler_init(base_path, &bad) == NULL && strstr(dlogp_last_error(), "mode") != NULL;
    checks &= dlogp_sampler_feed_prompt(NULL, prompt, (size_t)n_prompt) == -1;
    struct llama_sampler *greedy = llama_sampler_init_greedy();
    checks &= dlogp_sampler_feed_prompt(greedy, prompt, (size_t)n_prompt) == -1; /* foreign sampler */
    llama_sampler_free(greedy);
    if (shared) {
        checks &= dlogp_sampler_init_shared(NULL, base_path, &p) == NULL && strstr(dlogp_last_error(), "base_model") != NULL;
        checks &= dlogp_sampler_init_shared(model, NULL, &p) == NULL;
        struct dlogp_params other_batch = p;
        other_batch.abi.size_batch += 8; /* checked only where llama.cpp is shared */
        checks &= dlogp_sampler_init_shared(model, base_path, &other_batch) == NULL && strstr(dlogp_last_error(), "llama_batch") != NULL;
    } else {
        /* the standalone build has its own llama.cpp: the host's model is foreign to it */
        checks &= dlogp_sampler_init_shared(model, base_path, &p) == NULL && strstr(dlogp_last_error(), "carries its own llama.cpp") != NULL;
    }

    struct llama_sampler *dl = make_dlogp(base_path, &p);
    if (!dl) { fprintf(stderr, "dlogp_sampler_init: %s\n", dlogp_last_error()); return 1; }
    checks &= dlogp_sampler_feed_prompt(dl, NULL, 3) == -1;
    checks &= strcmp(llama_sampler_name(dl), "dlogp") == 0;

    struct llama_sampler *chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(chain, dl); /* the chain owns dl now */

    if (dlogp_sampler_feed_prompt(dl, prompt, (size_t)n_prompt) != 0) {
        fprintf(stderr, "feed_prompt: %s\n", dlogp_last_error());
        return 1;
    }
    struct llama_sampler *copy = llama_sampler_clone(dl); /* state after the prompt */
    if (!copy) { fprintf(stderr, "clone: %s\n", dlogp_last_error()); return 1; }

    llama_token *out = malloc(sizeof(llama_token) * (size_t)(n_predict + 1));
    int n = generate(ctx, vocab, chain, prompt, n_prompt, n_predict, out);
    print_tokens("tokens", out, n);
    /* peak RSS and PSS with one dlogp sampler (and its clone) alive */
    printf("memory: %ld %ld\n", proc_kib("/proc/self/status", "VmHWM:"),
           proc_kib("/proc/self/smaps_rollup", "Pss:"));
    checks &= dlogp_sampler_error(dl) == NULL;
    struct dlogp_stats stats;
    checks &= dlogp_sampler_stats(dl, &stats) == 0;
    checks &= dlogp_sampler_stats(dl, NULL) == -1;
    printf("stats: %llu %llu\n", (unsigned long long)stats.n_decided, (unsigned long long)stats.n_fired);

    n = generate(ctx, vocab, copy, prompt, n_prompt, n_predict, out);
    print_tokens("clone", out, n);

    llama_sampler_reset(chain);
    if (dlogp_sampler_feed_prompt(dl, prompt, (size_t)n_prompt) != 0) return 1;
    n = generate(ctx, vocab, chain, prompt, n_prompt, n_predict, out);
    print_tokens("reset", out, n);

    /* sampling without a prompt falls back and reports an error */
    llama_sampler_reset(copy);
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_decode(ctx, llama_batch_get_one(prompt, n_prompt));
    (void)llama_sampler_sample(copy, ctx, -1);
    checks &= dlogp_sampler_error(copy) != NULL;

    /* composable: dlogp rewrites the logits, the chain's dist draws */
    struct dlogp_params pc = p;
    pc.compose = 1;
    pc.top_k = 1;
    struct llama_sampler *dc = make_dlogp(base_path, &pc);
    if (!dc) { fprintf(stderr, "compose init: %s\n", dlogp_last_error()); return 1; }
    struct llama_sampler *composed = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(composed, dc);
    llama_sampler_chain_add(composed, llama_sampler_init_dist((uint32_t)p.seed + 1));
    if (dlogp_sampler_feed_prompt(dc, prompt, (size_t)n_prompt) != 0) return 1;
    n = generate(ctx, vocab, composed, prompt, n_prompt, n_predict, out);
    print_tokens("compose", out, n);
    checks &= dlogp_sampler_error(dc) == NULL;
    checks &= dlogp_sampler_stats(dc, &stats) == 0 && stats.n_decided == (uint64_t)n;
    llama_sampler_free(composed);

    printf("checks: %s\n", checks ? "ok" : "FAILED");
    free(out);
    llama_sampler_free(copy);
    llama_sampler_free(chain);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return checks ? 0 : 1;
}
