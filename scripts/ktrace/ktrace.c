// ktrace: the GPU's own record of every kernel, copy and fill of one profiled range of a CUDA
// program, written as CSV, with CUPTI's activity API.
//
// Why: Nsight Compute cannot read counters on every GPU machine (it fails on gVisor) and
// Nsight Systems is not always installed, but CUPTI's activity records (what PyTorch's own
// profiler reads) work there. ktrace needs no change to the program: the CUDA driver loads it
// at cuInit when CUDA_INJECTION64_PATH names it, and it records between the program's
// cuProfilerStart and cuProfilerStop (`lantern bench --cuda-profiler-range`,
// `bench_torch_gpt.py --cuda-profiler-range`, or cudaProfilerStart/Stop). Outside that range
// nothing is enabled but the two API callbacks, so the rest of the run is not slowed.
//
//   CUDA_INJECTION64_PATH=/abs/libktrace.so KTRACE_OUT=trace.csv KTRACE_LABEL=lantern prog ...
//
// KTRACE_OUT (default ktrace.csv) is appended to, so several programs can share one file;
// KTRACE_LABEL (default "run") names the program in each row. One row per record:
//   label,range,kind,start_ns,end_ns,stream,bytes,name
// kind is kernel, memcpy or memset; start and end are the GPU's timestamps in ns; bytes is 0
// for kernels; name is the kernel's (mangled) name, or the copy's direction, last because a
// name may hold commas. Lines starting with '#' are comments (dropped records are reported
// there and on stderr). scripts/bench_table.py --ktrace reads it.
//
// Built by scripts/ktrace/build.sh against CUPTI 13.0's headers; at run time libcupti.so.13
// comes from LD_LIBRARY_PATH (PyTorch's cu13 wheels carry it).

#include <cupti.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Activity buffers handed to CUPTI: 8 MiB holds about 40k kernel records.
#define KTRACE_BUFFER_BYTES (8u << 20)
#define KTRACE_ALIGN 8

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *g_out;
static const char *g_label = "run";
static int g_range;   // 1-based number of the current or last profiled range
static int g_active;  // recording between cuProfilerStart and cuProfilerStop
static unsigned long long g_rows;
static unsigned long long g_dropped;

static void report(const char *what, CUptiResult r) {
  const char *s = "?";
  cuptiGetResultString(r, &s);
  fprintf(stderr, "ktrace: %s failed: %s\n", what, s);
}

#define CHECK(call)                 \
  do {                              \
    CUptiResult r_ = (call);        \
    if (r_ != CUPTI_SUCCESS) {      \
      report(#call, r_);            \
      return 0;                     \
    }                               \
  } while (0)

static const CUpti_ActivityKind kKinds[] = {
    CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
    CUPTI_ACTIVITY_KIND_MEMCPY,
    CUPTI_ACTIVITY_KIND_MEMSET,
};
#define N_KINDS (sizeof(kKinds) / sizeof(kKinds[0]))

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
  *buffer = aligned_alloc(KTRACE_ALIGN, KTRACE_BUFFER_BYTES);
  *size = *buffer ? KTRACE_BUFFER_BYTES : 0;  // 0: CUPTI drops the records and counts them
  *max_records = 0;                           // as many as fit
}

static const char *copy_name(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "memcpy PtoP";
    default: return "memcpy";
  }
}

static void row(const char *kind, uint64_t start, uint64_t end, uint32_t stream,
                uint64_t bytes, const char *name) {
  fprintf(g_out, "%s,%d,%s,%llu,%llu,%u,%llu,%s\n", g_label, g_range, kind,
          (unsigned long long)start, (unsigned long long)end, stream, (unsigned long long)bytes,
          name ? name : "?");
  g_rows++;
}

// One CSV row per record. Runs on CUPTI's worker thread or in a flush; the lock keeps rows
// whole when two buffers complete at once.
static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer,
                                      size_t size, size_t valid) {
  (void)size;
  CUpti_Activity *rec = NULL;
  pthread_mutex_lock(&g_lock);
  while (g_out && cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_KERNEL ||
        rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
      const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
      row("kernel", k->start, k->end, k->streamId, 0, k->name);
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)rec;
      row("memcpy", m->start, m->end, m->streamId, m->bytes, copy_name(m->copyKind));
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)rec;
      row("memset", m->start, m->end, m->streamId, m->bytes, "memset");
    }
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) == CUPTI_SUCCESS && dropped) {
    g_dropped += dropped;
    if (g_out) fprintf(g_out, "# %s: %zu records dropped\n", g_label, dropped);
    fprintf(stderr, "ktrace: %zu records dropped\n", dropped);
  }
  pthread_mutex_unlock(&g_lock);
  free(buffer);
}

static void set_recording(int on) {
  for (size_t i = 0; i < N_KINDS; i++) {
    CUptiResult r = on ? cuptiActivityEnable(kKinds[i]) : cuptiActivityDisable(kKinds[i]);
    if (r != CUPTI_SUCCESS) report(on ? "cuptiActivityEnable" : "cuptiActivityDisable", r);
  }
}

// cuProfilerStart (also reached through cudaProfilerStart) opens a range once it has returned,
// cuProfilerStop closes it as it is entered; the program synchronizes before stopping.
static void CUPTIAPI on_api(void *userdata, CUpti_CallbackDomain domain, CUpti_CallbackId cbid,
                            const void *data) {
  (void)userdata;
  const CUpti_CallbackData *cb = (const CUpti_CallbackData *)data;
  int start = (domain == CUPTI_CB_DOMAIN_DRIVER_API &&
               cbid == CUPTI_DRIVER_TRACE_CBID_cuProfilerStart) ||
              (domain == CUPTI_CB_DOMAIN_RUNTIME_API &&
               cbid == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000);
  int stop = (domain == CUPTI_CB_DOMAIN_DRIVER_API &&
              cbid == CUPTI_DRIVER_TRACE_CBID_cuProfilerStop) ||
             (domain == CUPTI_CB_DOMAIN_RUNTIME_API &&
              cbid == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000);
  pthread_mutex_lock(&g_lock);
  if (start && cb->callbackSite == CUPTI_API_EXIT && !g_active) {
    g_active = 1;
    g_range++;
    pthread_mutex_unlock(&g_lock);
    set_recording(1);
    return;
  }
  if (stop && cb->callbackSite == CUPTI_API_ENTER && g_active) {
    g_active = 0;
    pthread_mutex_unlock(&g_lock);
    set_recording(0);
    return;
  }
  pthread_mutex_unlock(&g_lock);
}

static void at_exit(void) {
  // Records still in CUPTI's buffers (all of them, usually) are delivered now.
  CUptiResult r = cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  if (r != CUPTI_SUCCESS) report("cuptiActivityFlushAll", r);
  pthread_mutex_lock(&g_lock);
  if (g_out) {
    fprintf(g_out, "# %s: %llu rows from %d profiled range(s)\n", g_label, g_rows, g_range);
    fclose(g_out);
    g_out = NULL;
  }
  pthread_mutex_unlock(&g_lock);
  fprintf(stderr, "ktrace: %llu rows from %d profiled range(s)%s\n", g_rows, g_range,
          g_range ? "" : " (the program never called cuProfilerStart)");
}

// Called by the CUDA driver during cuInit. Returning 0 reports the failure; the program runs
// on untraced either way.
__attribute__((visibility("default"))) int InitializeInjection(void) {
  static int done;
  if (done) return 1;
  done = 1;
  const char *path = getenv("KTRACE_OUT");
  if (!path || !*path) path = "ktrace.csv";
  const char *label = getenv("KTRACE_LABEL");
  if (label && *label) g_label = label;
  g_out = fopen(path, "a");
  if (!g_out) {
    fprintf(stderr, "ktrace: cannot open %s for writing\n", path);
    return 0;
  }
  fprintf(g_out, "# ktrace: label,range,kind,start_ns,end_ns,stream,bytes,name\n");
  CUpti_SubscriberHandle sub;
  CHECK(cuptiSubscribe(&sub, on_api, NULL));
  CHECK(cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_DRIVER_API,
                            CUPTI_DRIVER_TRACE_CBID_cuProfilerStart));
  CHECK(cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_DRIVER_API,
                            CUPTI_DRIVER_TRACE_CBID_cuProfilerStop));
  CHECK(cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_RUNTIME_API,
                            CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000));
  CHECK(cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_RUNTIME_API,
                            CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000));
  CHECK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
  atexit(at_exit);
  fprintf(stderr, "ktrace: recording profiled ranges to %s as %s\n", path, g_label);
  return 1;
}
