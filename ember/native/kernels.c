/*
 * Ember's native simulation kernels: many network steps per call.
 *
 * The Python side (ember/native/plan.py) describes a network with the
 * structures below, pointing at the same state tensors that the PyTorch path
 * uses, and calls ember_run_f32 or ember_run_f64. One call advances the
 * network by up to `steps` steps in the order of ember.network.Network.step.
 * Nodes step in topological order: a population reads its connections' ring
 * buffers, passes the input through the synapses and integrates, and a
 * source emits. Each connection takes in the spikes of its presynaptic node
 * right after that node stepped. Learning rules follow, then recording.
 *
 * Every floating point operation is the one the PyTorch path performs, in the
 * same order and the same precision, so that both paths give the same
 * numbers. Build without -ffast-math and with -ffp-contract=off: a fused
 * multiply-add rounds differently from a multiply followed by an add.
 *
 * The layouts of the structures must match the ctypes mirrors in
 * ember/native/structs.py field for field.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Bump when a structure layout changes, together with ABI_VERSION in structs.py. */
#define EMBER_NATIVE_ABI 3

enum { NODE_POPULATION = 0, NODE_POISSON = 1, NODE_FRAMES = 2 };
enum { CONN_DENSE = 0, CONN_LATERAL = 1, CONN_ONE_TO_ONE = 2 };
enum { SYN_VOLTAGE = 0, SYN_CHARGE = 1, SYN_EXPONENTIAL = 2, SYN_CONDUCTANCE = 3, SYN_DOUBLE_EXPONENTIAL = 4 };
enum { RULE_STDP = 0, RULE_DIEHL_COOK = 1 };
enum { BOUNDS_NONE = 0, BOUNDS_HARD = 1, BOUNDS_SOFT = 2 };

typedef struct {
    int32_t kind;
    int32_t size;
    void *spikes;                 /* (B, size), 0 or 1 */

    /* Populations (LIF, AdaptiveLIF). Parameters are expanded to (size,). */
    void *v;                      /* (B, size) mV */
    int32_t *refractory;          /* (B, size) remaining steps */
    const void *v_rest;
    const void *v_reset;
    const void *v_threshold;
    const void *resistance;
    const void *decay;            /* exp(-dt / tau_mem) */
    const int32_t *refractory_steps;
    int32_t adaptive;
    int32_t theta_shared;         /* theta is (size,) instead of (B, size) */
    int32_t adapt;
    int32_t pad0;
    void *theta;                  /* mV */
    const void *theta_decay;      /* exp(-dt / tau_theta), (size,) */
    const void *theta_plus;       /* (size,) mV */
    int32_t in_first, in_count;   /* incoming connections: in_list[in_first ...] */
    int32_t out_first, out_count; /* outgoing connections: out_list[out_first ...] */
    int32_t injection_first, injection_count;

    /* Poisson sources (bernoulli draws of torch.rand on the CPU generator). */
    const void *probability;      /* (B, size), already clamped to at most 1 */
    uint64_t seed;
    int64_t stream;

    /* Sources whose spikes were computed in Python: (steps, B, size). */
    const uint8_t *frames;

    /* Recording. */
    int32_t *counts;              /* (B, size) spike counts, or NULL */
    int64_t record_start;
    int64_t record_stop;          /* -1 for no end */
    int64_t *event_step;          /* event buffers, or NULL */
    int64_t *event_index;
    int64_t *event_sample;
    int64_t event_capacity;
    int64_t event_count;
} Node;

typedef struct {
    const void *amplitude;        /* (B, size) nA */
    int64_t start;
    int64_t stop;                 /* -1 for no end */
} Injection;

typedef struct {
    int32_t kind;
    int32_t synapse;
    int32_t pre, post;            /* node indices */
    int32_t pre_size, post_size;
    int32_t slots;
    int32_t has_fraction;
    void *weight;                 /* (pre_size, post_size), or (post_size,) for one-to-one */
    const int32_t *delay;         /* one-to-one with delays: whole delay steps per synapse, or NULL */
    const int32_t *offset;        /* dense and lateral with delays: whole delay steps * post_size + j, or NULL */
    const void *fraction;         /* fractional part per synapse, or NULL */
    void *in_flight;              /* (B, slots, post_size) */
    const void *bias;             /* (post_size,) or NULL */
    double dt;
    void *synapse_a;              /* current, conductance or rise trace, (B, post_size) */
    void *synapse_b;              /* decay trace of the double exponential */
    const void *synapse_decay_a;  /* (post_size,) */
    const void *synapse_decay_b;
    const void *synapse_parameter;/* e_rev (mV) or the peak factor, (post_size,) */
    int32_t shift;                /* dense and lateral whose synapses share one whole delay: that delay in steps */
} Conn;

typedef struct {
    int32_t kind;
    int32_t conn;
    int32_t nearest;              /* a spike sets its trace to 1 instead of adding 1 */
    int32_t mean;                 /* batch reduction: mean (1) or sum (0) */
    int32_t bounds;
    int32_t full_pass;            /* the next update touches every weight (in/out) */
    int32_t has_bound_min, has_bound_max;
    int32_t has_w_min, has_w_max;
    int32_t depress, potentiate;  /* whether each update is applied at all */
    int32_t defer;                /* potentiation may be deferred (see "deferred potentiation" in kernels_step.h) */
    int32_t arrival;              /* presynaptic spikes count when they arrive through whole-step delays */
    int32_t arrival_steps;        /* out: steps of the last call that kept the traces as arrival steps */
    int32_t pad1;
    double decay_pre, decay_post1, decay_post2;
    double depression_factor;     /* -a_minus or -nu_pre */
    double potentiation_factor;   /* a_plus or nu_post */
    double bound_min, bound_max;  /* the rule's Bounds */
    double w_min, w_max;          /* the connection's hard bounds */
    void *pre_trace;              /* (B, pre_size) */
    void *post_trace1;            /* (B, post_size) */
    void *post_trace2;            /* (B, post_size), Diehl & Cook only */
    /* Arrival timing; pre_trace is then per synapse, (B, pre_size, post_size). */
    const uint8_t *delay;         /* (pre_size, post_size) whole delay steps, below 64 */
    const int32_t *bucket_start;  /* (pre_size, max_delay + 2): where each delay's columns start in bucket_column */
    const int32_t *bucket_column; /* (pre_size, post_size): each row's columns in order of delay */
    int32_t max_delay;            /* the largest whole delay in steps */
    int32_t pad2;
    uint64_t *bits;               /* (B, pre_size) spike history: bit k is the spike of k steps ago */
    int64_t *older;               /* (B, pre_size) step of the newest spike that left `bits`, or -1 */
    int64_t *reported;            /* (B, pre_size, post_size) ArrivalTracker.reported: emission step of the last arrival */
} Rule;

typedef struct {
    int32_t batch;
    int32_t n_nodes;
    int32_t n_conns;
    int32_t n_rules;
    int64_t step0;
    int64_t steps;
    Node *nodes;
    Conn *conns;
    Rule *rules;
    Injection *injections;
    const int32_t *in_list;
    const int32_t *out_list;
} Net;

int32_t ember_abi_version(void) { return EMBER_NATIVE_ABI; }

/* ------------------------------------------------------------------ seeds */

/* ember.random.mix_seed: the SplitMix64 finaliser over the parts. */
static uint64_t mix_seed3(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t parts[3] = {a, b, c};
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    for (int k = 0; k < 3; k++) {
        state = (state ^ parts[k]) * 0xBF58476D1CE4E5B9ULL;
        state ^= state >> 31;
        state = state * 0x94D049BB133111EBULL;
        state ^= state >> 29;
    }
    return state & 0x7FFFFFFFFFFFFFFFULL;
}

/* ------------------------------------------------- torch's CPU generator */

/*
 * The Mersenne Twister MT19937 seeded as torch.Generator.manual_seed seeds the
 * CPU generator (the low 32 bits of the seed, Knuth's initialisation). After
 * seeding, torch's generator refills the state before its first output, so
 * its outputs are the tempered words of successive refills. torch.rand
 * turns them into floats: float32 takes the low 24 bits of one output,
 * float64 the low 53 bits of two outputs (the first one high). runner.py
 * compares these draws with torch.rand and uses them only if they match.
 */
#define MT_N 624
#define MT_M 397
/* Steps whose generators are seeded together, so the serial seeding recurrences overlap. */
#define DRAW_BLOCK 8
/* Weight matrices up to this size potentiate a batch in blocks of columns, larger ones row by row. */
#define CACHED_WEIGHT_BYTES ((size_t)16 << 20)
/* Columns of a delay line that one pass over the spiking rows updates. */
#define LINE_TILE 128

static void twister_seed_many(uint32_t (*states)[MT_N], const uint64_t *seeds, int count) {
    for (int k = 0; k < count; k++) states[k][0] = (uint32_t)(seeds[k] & 0xffffffffULL);
    for (int j = 1; j < MT_N; j++) {
        for (int k = 0; k < count; k++) {
            const uint32_t previous = states[k][j - 1];
            states[k][j] = 1812433253U * (previous ^ (previous >> 30)) + (uint32_t)j;
        }
    }
}

static inline uint32_t twist(uint32_t u, uint32_t v) {
    const uint32_t mixed = (u & 0x80000000U) | (v & 0x7fffffffU);
    return (mixed >> 1) ^ ((v & 1U) ? 0x9908b0dfU : 0U);
}

static void twister_refill(uint32_t *s) {
    int j;
    for (j = 0; j < MT_N - MT_M; j++) s[j] = s[j + MT_M] ^ twist(s[j], s[j + 1]);
    for (; j < MT_N - 1; j++) s[j] = s[j + MT_M - MT_N] ^ twist(s[j], s[j + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ twist(s[MT_N - 1], s[0]);
}

/* Write the next `count` outputs of a freshly seeded state into `out`. */
static void twister_outputs(uint32_t *state, uint32_t *out, int64_t count) {
    for (int64_t first = 0; first < count; first += MT_N) {
        const int64_t n = count - first < MT_N ? count - first : MT_N;
        twister_refill(state);
        for (int64_t j = 0; j < n; j++) {
            uint32_t y = state[j];
            y ^= y >> 11;
            y ^= (y << 7) & 0x9d2c5680U;
            y ^= (y << 15) & 0xefc60000U;
            y ^= y >> 18;
            out[first + j] = y;
        }
    }
}

static inline float uniform_f32(const uint32_t *outputs, int64_t k) {
    return (float)(outputs[k] & ((1U << 24) - 1U)) * (1.0f / 16777216.0f);
}

static inline double uniform_f64(const uint32_t *outputs, int64_t k) {
    const uint64_t bits = (((uint64_t)outputs[2 * k] << 32) | outputs[2 * k + 1]) & ((1ULL << 53) - 1ULL);
    return (double)bits * (1.0 / 9007199254740992.0);
}

/* Fill `out` with torch.rand(count, generator=manual_seed(seed)) values, for the self-check. */
void ember_uniform_f32(uint64_t seed, int64_t count, float *out) {
    uint32_t state[1][MT_N];
    uint32_t *outputs = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(count + 1));
    if (!outputs) return;
    twister_seed_many(state, &seed, 1);
    twister_outputs(state[0], outputs, count);
    for (int64_t k = 0; k < count; k++) out[k] = uniform_f32(outputs, k);
    free(outputs);
}

void ember_uniform_f64(uint64_t seed, int64_t count, double *out) {
    uint32_t state[1][MT_N];
    uint32_t *outputs = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(2 * count + 1));
    if (!outputs) return;
    twister_seed_many(state, &seed, 1);
    twister_outputs(state[0], outputs, 2 * count);
    for (int64_t k = 0; k < count; k++) out[k] = uniform_f64(outputs, k);
    free(outputs);
}

uint64_t ember_mix_seed3(uint64_t a, uint64_t b, uint64_t c) { return mix_seed3(a, b, c); }

/* ------------------------------------------------------- scratch memory */

/* Per-call working memory: the active units of every node in every sample, and more. */
typedef struct {
    int32_t *active;        /* per node: B lists of up to size entries */
    int32_t *active_count;  /* per node: B counts */
    int64_t *active_offset; /* per node: offset into `active` */
    int32_t *rows;          /* union of active presynaptic rows */
    uint8_t *row_mark;
    int32_t *columns;       /* union of spiking postsynaptic columns */
    uint8_t *column_mark;
    void *sums;             /* a block of columns or a row of pair sums */
    int32_t *post_list;     /* the spiking columns of every sample, one after the other */
    void *post_value;       /* the postsynaptic factor of each of them */
    int32_t *post_first;    /* (B + 1,) where each sample's columns start in post_list */
    uint8_t *drawn;         /* per Poisson node: DRAW_BLOCK steps of spikes */
    int64_t *drawn_offset;
    uint32_t (*states)[MT_N];
    uint32_t *outputs;      /* one step's generator outputs */
    void *inputs;           /* one sample's summed current and jump of a population */
    void **line;            /* per connection with an offset table: its line of future input, else NULL */
    int64_t *line_position; /* per connection: the cell of the current step in its line */
    struct Deferred *deferred; /* per rule: deferred potentiation, active or not */
    struct Arrivals *arrivals; /* per rule: arrival times of a nearest trace, active or not */
    int32_t *deferred_of_conn; /* per connection: the rule whose potentiation is deferred, or -1 */
} Scratch;

/*
 * A nearest presynaptic trace per synapse, kept as the step of the last
 * arrival: after an arrival the trace is 1 and then decays, so k steps later
 * it is decay multiplied k times, power[k] (see "arrival timing" in
 * kernels_step.h). Steps are counted from the first step of the call.
 */
typedef struct Arrivals {
    int active;
    int size;              /* entries of `power`; the trace is 0 from `size` steps on */
    int32_t *last;         /* (batch, post, pre) step of the last arrival, or ARRIVAL_NEVER */
    void *power;           /* REAL (size,): 1, decay, decay * decay, ... */
    /* With several samples: the pair sums of the step, 0 between steps. */
    void *depression;      /* REAL (pre, post) */
    void *potentiation;    /* REAL (post, pre) */
    uint8_t *spiked;       /* (post,) 1 for a column in spiked_list */
    int32_t *spiked_list;  /* columns of the neurons that spiked in some sample */
} Arrivals;

#define ARRIVAL_NEVER INT32_MIN
#define ARRIVAL_MAX_POWERS (1 << 16)
/* With several samples, arrival steps take 4 bytes per synapse and sample, and
 * setting them up costs about as much as a few steps of the dense pass. */
#define ARRIVAL_BATCH_MAX_BYTES ((size_t)1 << 30)
#define ARRIVAL_BATCH_MIN_STEPS 16

static void arrivals_close(Arrivals *a) {
    free(a->last);
    free(a->power);
    free(a->depression);
    free(a->potentiation);
    free(a->spiked);
    free(a->spiked_list);
    memset(a, 0, sizeof(*a));
}

/*
 * Deferred potentiation of one pair STDP rule with one sample (see
 * "deferred potentiation" in kernels_step.h). Steps count from `base`, the
 * first step of the call, in spans of `span` steps. A ring keeps the sums of
 * the last `spans` spans.
 */
typedef struct Deferred {
    int active;
    int span;          /* steps per span */
    int spans;         /* spans kept */
    int fresh;         /* the current span's sums are all zero */
    int64_t base;
    int64_t depressed; /* the step whose depression emit already applied, or -1 */
    void *sums;        /* (spans, post) REAL: row q % spans sums decay^(t - q span) over the spikes of neuron j at steps t >= q span */
    int64_t *anchor;   /* (pre,) the step since which each row owes potentiation */
    double *value;     /* (pre,) the presynaptic trace at that step */
    double *power;     /* (spans * span + 1,) decay^m */
    double *growth;    /* (span,) decay^-m */
} Deferred;

/*
 * A span is at most DEFER_MAX_SPAN steps, and short enough that
 * decay^-(span - 1), by which a difference of two sums is scaled, stays
 * below DEFER_MAX_GROWTH. DEFER_WINDOW steps of spans are kept: a row idle
 * for longer pays and starts owing again.
 */
#define DEFER_MAX_SPAN 32
#define DEFER_MAX_GROWTH 8.0
#define DEFER_WINDOW 256

/* What one pass along a row of a deferring rule does (row_pass in kernels_step.h), in this order. */
enum { PASS_PAY = 1, PASS_SEND = 2, PASS_DEPRESS = 4, PASS_ANCHOR = 8 };

static void deferred_open(Deferred *d, const Net *net, const Rule *r, size_t real_size) {
    const Conn *c = &net->conns[r->conn];
    memset(d, 0, sizeof(*d));
    if (!r->defer || net->batch != 1 || r->decay_pre <= 0.0 || r->decay_pre > 1.0) return;
    const int P = c->post_size, I = c->pre_size;
    double span = r->decay_pre < 1.0 ? 1.0 + log(DEFER_MAX_GROWTH) / -log(r->decay_pre) : DEFER_MAX_SPAN;
    if (span > DEFER_MAX_SPAN) span = DEFER_MAX_SPAN;
    d->span = (int)span;
    d->spans = (DEFER_WINDOW + d->span - 1) / d->span;
    d->depressed = -1;
    d->sums = calloc((size_t)d->spans * (size_t)P, real_size);
    d->anchor = (int64_t *)calloc((size_t)I, sizeof(int64_t));
    d->value = (double *)calloc((size_t)I, sizeof(double));
    d->power = (double *)malloc(sizeof(double) * ((size_t)d->spans * (size_t)d->span + 1));
    d->growth = (double *)malloc(sizeof(double) * (size_t)d->span);
    if (!d->sums || !d->anchor || !d->value || !d->power || !d->growth) return;
    for (int m = 0; m <= d->spans * d->span; m++) d->power[m] = pow(r->decay_pre, (double)m);
    for (int m = 0; m < d->span; m++) d->growth[m] = 1.0 / d->power[m];
    d->active = 1;
}

static void deferred_close(Deferred *d) {
    free(d->sums);
    free(d->anchor);
    free(d->value);
    free(d->power);
    free(d->growth);
    memset(d, 0, sizeof(*d));
}

static int scratch_open(Scratch *w, const Net *net, size_t real_size) {
    const int B = net->batch;
    int64_t total = 0, widest = 1, sums = 1, drawn = 0, outputs = 1, spiking = 1;

    memset(w, 0, sizeof(*w));
    w->active_offset = (int64_t *)malloc(sizeof(int64_t) * (size_t)(net->n_nodes + 1));
    w->drawn_offset = (int64_t *)malloc(sizeof(int64_t) * (size_t)(net->n_nodes + 1));
    w->active_count = (int32_t *)calloc((size_t)net->n_nodes * (size_t)B + 1, sizeof(int32_t));
    w->line = (void **)calloc((size_t)net->n_conns + 1, sizeof(void *));
    w->deferred = (Deferred *)calloc((size_t)net->n_rules + 1, sizeof(Deferred));
    w->arrivals = (Arrivals *)calloc((size_t)net->n_rules + 1, sizeof(Arrivals));
    w->deferred_of_conn = (int32_t *)malloc(sizeof(int32_t) * ((size_t)net->n_conns + 1));
    w->line_position = (int64_t *)calloc((size_t)net->n_conns + 1, sizeof(int64_t));
    if (!w->active_offset || !w->drawn_offset || !w->active_count || !w->line || !w->line_position || !w->deferred ||
        !w->deferred_of_conn || !w->arrivals)
        return -1;
    for (int ci = 0; ci < net->n_conns; ci++) w->deferred_of_conn[ci] = -1;
    for (int r = 0; r < net->n_rules; r++) {
        deferred_open(&w->deferred[r], net, &net->rules[r], real_size);
        if (w->deferred[r].active) w->deferred_of_conn[net->rules[r].conn] = r;
    }

    /* Sizes: active lists of every node, Poisson draws, pair sums of the largest rule. */
    for (int n = 0; n < net->n_nodes; n++) {
        const int64_t units = (int64_t)B * net->nodes[n].size;
        w->active_offset[n] = total;
        total += units;
        if (net->nodes[n].size > widest) widest = net->nodes[n].size;
        w->drawn_offset[n] = drawn;
        if (net->nodes[n].kind == NODE_POISSON) {
            drawn += DRAW_BLOCK * units;
            if (2 * units > outputs) outputs = 2 * units;
        }
    }
    for (int r = 0; r < net->n_rules; r++) {
        const Conn *c = &net->conns[net->rules[r].conn];
        /* A block of up to 64 columns of the presynaptic size or one row of pair sums, and the spiking columns of every sample. */
        if (64 * (int64_t)c->pre_size > sums) sums = 64 * (int64_t)c->pre_size;
        if (2 * (int64_t)c->post_size > sums) sums = 2 * (int64_t)c->post_size;
        if ((int64_t)B * c->post_size > spiking) spiking = (int64_t)B * c->post_size;
    }

    w->active = (int32_t *)malloc(sizeof(int32_t) * (size_t)(total + 1));
    w->rows = (int32_t *)malloc(sizeof(int32_t) * (size_t)widest);
    w->row_mark = (uint8_t *)calloc((size_t)widest, 1);
    w->columns = (int32_t *)malloc(sizeof(int32_t) * (size_t)widest);
    w->column_mark = (uint8_t *)calloc((size_t)widest, 1);
    w->sums = malloc(real_size * (size_t)sums);
    w->post_list = (int32_t *)malloc(sizeof(int32_t) * (size_t)spiking);
    w->post_value = malloc(real_size * (size_t)spiking);
    w->post_first = (int32_t *)malloc(sizeof(int32_t) * ((size_t)B + 1));
    w->drawn = (uint8_t *)malloc((size_t)drawn + 1);
    w->states = (uint32_t(*)[MT_N])malloc(sizeof(uint32_t) * MT_N * DRAW_BLOCK);
    w->outputs = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)outputs);
    w->inputs = malloc(real_size * 2 * (size_t)widest);
    if (!w->active || !w->rows || !w->row_mark || !w->columns || !w->column_mark || !w->sums || !w->post_list ||
        !w->post_value || !w->post_first || !w->drawn ||
        !w->states || !w->outputs || !w->inputs)
        return -1;
    return 0;
}

static void scratch_close(Scratch *w, const Net *net) {
    if (w->line)
        for (int ci = 0; ci < net->n_conns; ci++) free(w->line[ci]);
    free(w->line);
    free(w->line_position);
    if (w->deferred)
        for (int r = 0; r < net->n_rules; r++) deferred_close(&w->deferred[r]);
    free(w->deferred);
    if (w->arrivals)
        for (int r = 0; r < net->n_rules; r++) arrivals_close(&w->arrivals[r]);
    free(w->arrivals);
    free(w->deferred_of_conn);
    free(w->active);
    free(w->active_count);
    free(w->active_offset);
    free(w->rows);
    free(w->row_mark);
    free(w->columns);
    free(w->column_mark);
    free(w->sums);
    free(w->post_list);
    free(w->post_value);
    free(w->post_first);
    free(w->drawn);
    free(w->drawn_offset);
    free(w->states);
    free(w->outputs);
    free(w->inputs);
}

/* ------------------------------------------------ the two precisions */

#define REAL float
#define FN(name) name##_f32
#define UNIFORM uniform_f32
#include "kernels_step.h"
#undef REAL
#undef FN
#undef UNIFORM

#define REAL double
#define FN(name) name##_f64
#define UNIFORM uniform_f64
#include "kernels_step.h"
#undef REAL
#undef FN
#undef UNIFORM
