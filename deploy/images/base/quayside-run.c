/*
 * quayside-run: runs one program (one test of a job) inside the sandbox and reports what it
 * used, the same way on every backend (docs/design/tests-per-job.md, section 3).
 *
 *   quayside-run [--wall-ms N] [--output-bytes N] [--stdin F] [--stdout F] [--stderr F]
 *                [--report-fd N] -- COMMAND [ARG...]
 *
 * Runs COMMAND in its own process group, as a child of this process, which is a subreaper:
 * every descendant is reaped here, and none outlives the run. Kills the whole group at
 * --wall-ms. --output-bytes sets RLIMIT_FSIZE to N + 1 for the program, so a redirected
 * stream written past N stops it (SIGXFSZ) and its file size shows it. Then writes one line to
 * --report-fd (default 2):
 *
 *   exit=<code|-> signal=<n|-> timed_out=<0|1> wall_us=<n> cpu_us=<n> maxrss_kb=<n>
 *   oom_kills=<n|-> stdout_bytes=<n|-> stderr_bytes=<n|-> orphans=<0|1> subreaper=<0|1>
 *
 * cpu_us is ru_utime + ru_stime of every reaped descendant (getrusage(RUSAGE_CHILDREN));
 * maxrss_kb is the peak resident set of the largest of them. oom_kills is how many times the
 * memory cgroup's OOM killer fired during the run (cgroup v1 memory.oom_control or v2
 * memory.events), `-` where neither can be read (gVisor). orphans=1: a descendant could not
 * be reaped within 2 s (it dies with the sandbox). subreaper=0: the kernel (gVisor) refused
 * PR_SET_CHILD_SUBREAPER, so descendants that left the process group were neither killed nor
 * counted. Exit status: 0 when the report was
 * written, 125 on a usage or setup error (its message on stderr).
 *
 * Built static (`gcc -static -O2`) into the base runner image (/usr/local/bin, mode 0555). Its
 * first act is to make itself not dumpable, before the program exists: the program it runs
 * (the same uid) can then neither ptrace it nor open its /proc/<pid>/mem to rewrite the report.
 * (An execute-only file would do the same under runc, but gVisor refuses to execute a file it
 * cannot read.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SETUP_ERROR 125
/* How long to keep reaping what the program left behind. */
#define REAP_GRACE_US 2000000LL

static void die(const char *what) {
    fprintf(stderr, "quayside-run: %s: %s\n", what, strerror(errno));
    exit(SETUP_ERROR);
}

static long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* The cgroup's OOM-kill count, or -1 when no cgroup file says it. */
static long long oom_kills(void) {
    static const char *files[] = {"/sys/fs/cgroup/memory/memory.oom_control",
                                  "/sys/fs/cgroup/memory.events"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f)
            continue;
        char key[64];
        long long v;
        while (fscanf(f, "%63s %lld", key, &v) == 2) {
            if (strcmp(key, "oom_kill") == 0) {
                fclose(f);
                return v;
            }
        }
        fclose(f);
    }
    return -1;
}

static void redirect(const char *path, int fd, int flags) {
    if (!path)
        return;
    int f = open(path, flags, 0600);
    if (f < 0 || dup2(f, fd) < 0)
        die(path);
    if (f != fd)
        close(f);
}

static long long size_of(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Kills every child of this process (descendants that left the group were reparented here). */
static void kill_children(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    int pid;
    while (fscanf(f, "%d", &pid) == 1)
        kill(pid, SIGKILL);
    fclose(f);
}

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv) {
    if (prctl(PR_SET_DUMPABLE, 0) != 0)
        die("PR_SET_DUMPABLE");
    long long wall_ms = 0, output_bytes = 0;
    const char *in = NULL, *out = NULL, *err = NULL;
    int report_fd = 2, i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc) {
            fprintf(stderr, "quayside-run: %s needs a value\n", argv[i]);
            return SETUP_ERROR;
        }
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--wall-ms")) wall_ms = atoll(v);
        else if (!strcmp(k, "--output-bytes")) output_bytes = atoll(v);
        else if (!strcmp(k, "--stdin")) in = v;
        else if (!strcmp(k, "--stdout")) out = v;
        else if (!strcmp(k, "--stderr")) err = v;
        else if (!strcmp(k, "--report-fd")) report_fd = atoi(v);
        else {
            fprintf(stderr, "quayside-run: unknown option %s\n", k);
            return SETUP_ERROR;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "quayside-run: no command after --\n");
        return SETUP_ERROR;
    }
    char **cmd = argv + i + 1;
    /* gVisor refuses PR_SET_CHILD_SUBREAPER (EINVAL): there, a descendant that leaves the
     * process group is reparented to the sandbox's init instead, and not counted. */
    int subreaper = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
    /* The report descriptor is ours alone: the program never inherits it. */
    if (report_fd > 2 && fcntl(report_fd, F_SETFD, FD_CLOEXEC) != 0)
        die("report fd");

    long long oom_before = oom_kills();
    long long start = now_us();
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        setpgid(0, 0);
        if (output_bytes > 0) {
            struct rlimit r = {(rlim_t)output_bytes + 1, (rlim_t)output_bytes + 1};
            if (setrlimit(RLIMIT_FSIZE, &r) != 0)
                die("RLIMIT_FSIZE");
        }
        redirect(in, 0, O_RDONLY);
        redirect(out, 1, O_WRONLY | O_CREAT | O_TRUNC);
        redirect(err, 2, O_WRONLY | O_CREAT | O_TRUNC);
        execvp(cmd[0], cmd);
        fprintf(stderr, "quayside-run: cannot run %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    setpgid(child, child); /* whichever of parent and child runs first */

    /* SIGALRM interrupts the wait at the wall time (no SA_RESTART). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    if (wall_ms > 0) {
        struct itimerval t = {{0, 0}, {wall_ms / 1000, (wall_ms % 1000) * 1000}};
        setitimer(ITIMER_REAL, &t, NULL);
    }
    int status = 0, timed_out = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR)
            die("waitpid");
        timed_out = 1;
        kill(-child, SIGKILL);
    }
    long long wall = now_us() - start;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);

    /* Nothing of the program outlives it: its group, then whatever left the group. */
    /* A descendant may be reparented here between a scan and a wait, so poll, for at most
     * REAP_GRACE_US: one that cannot be found to kill (no /proc children file) is left to the
     * sandbox's end. */
    kill(-child, SIGKILL);
    int orphans = 0;
    for (long long until = now_us() + REAP_GRACE_US;;) {
        kill_children();
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r < 0 && errno == ECHILD)
            break;
        if (r == 0) {
            if (now_us() > until) {
                orphans = 1;
                break;
            }
            usleep(1000);
        }
    }

    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    long long cpu = (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                    ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    long long oom_after = oom_kills();

    char code[24] = "-", sig[24] = "-", oom[24] = "-", so[24] = "-", se[24] = "-";
    if (WIFEXITED(status))
        snprintf(code, sizeof code, "%d", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        snprintf(sig, sizeof sig, "%d", WTERMSIG(status));
    if (oom_before >= 0 && oom_after >= 0)
        snprintf(oom, sizeof oom, "%lld", oom_after - oom_before);
    if (size_of(out) >= 0)
        snprintf(so, sizeof so, "%lld", size_of(out));
    if (size_of(err) >= 0)
        snprintf(se, sizeof se, "%lld", size_of(err));
    dprintf(report_fd,
            "exit=%s signal=%s timed_out=%d wall_us=%lld cpu_us=%lld maxrss_kb=%ld "
            "oom_kills=%s stdout_bytes=%s stderr_bytes=%s orphans=%d subreaper=%d\n",
            code, sig, timed_out, wall, cpu, ru.ru_maxrss, oom, so, se, orphans, subreaper);
    return 0;
}
