using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Analytics.Cli.Commands;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Submission;

namespace Analytics.Cli.Bench;

/// <summary>
/// <c>bench limits</c>: what one limit-book check costs on the SMTP hot path — the dynamic book (a
/// snapshot of N limits over users, IPs and /24s) in front of the static one with the shipped
/// per-user message rate — in ns per check and bytes allocated per check, for CheckConnect,
/// CheckAuth, CheckMail and CheckRcpt over 1,024 subjects, half of them limited.
/// </summary>
internal static partial class LimitsBenchmark
{
    public static Command Create(CommandContext context)
    {
        var limits = new Option<int>("--limits") { Description = "Limits in the book (default 100,000)", DefaultValueFactory = _ => 100_000 };
        var iterations = new Option<int>("--iterations") { Description = "Checks per measurement (default 2,000,000)", DefaultValueFactory = _ => 2_000_000 };
        var command = new Command("limits", "Limit-book check cost (ns, target ≤ 100) and allocation (bytes, target 0) per check")
        {
            limits, iterations, BenchCommand.Json,
        };
        command.SetAction(async (parse, _) =>
        {
            var count = parse.GetValue(limits);
            var n = parse.GetValue(iterations);
            if (count < 1 || n < 1000)
            {
                throw new CliException("--limits must be at least 1 and --iterations at least 1000.");
            }

            var report = Run(count, n);
            await report.WriteAsync(context.IO.Out, parse.GetValue(BenchCommand.Json));
            return 0;
        });
        return command;
    }

    private static BenchReport Run(int count, int iterations)
    {
        var time = TimeProvider.System;
        var book = new LimitBook(new LimitsOptions { Fixed = { MessagesPerMinute = 30 } }, time);
        var now = time.GetUtcNow().UtcDateTime;
        var entries = new List<EntityLimit>(count);
        for (var i = 0; i < count; i++)
        {
            var entity = (i % 3) switch
            {
                0 => new EntityRef(EntityKind.User, $"user{i}@example.test"),
                1 => new EntityRef(EntityKind.Ip, Ip(i).ToString()),
                _ => new EntityRef(EntityKind.Net, $"{Ip(i).ToString()[..Ip(i).ToString().LastIndexOf('.')]}.0/24"),
            };
            entries.Add(new EntityLimit
            {
                Entity = entity, Level = LimitLevel.Throttle, Source = LimitSource.Model, MessagesPerMinute = 1e9, RecipientsPerHour = 1e12,
                RecipientsPerMessage = 50, Reason = "bench", SetAt = now, ExpiresAt = now.AddHours(1), Version = (ulong)i + 1,
            });
        }

        book.Replace(entries);

        // Half the subjects have a limit (user or IP in the book), half do not.
        var subjects = Enumerable.Range(0, 1024).Select(i => i % 2 == 0
            ? new LimitSubject(Ip(i * 3 + 1), $"user{i * 3}@example.test")
            : new LimitSubject(IPAddress.Parse($"10.9.{i % 250}.{1 + (i % 200)}"), $"nobody{i}@example.test")).ToArray();

        // The same subjects as sessions hold them: each with its LimitCache, as the listener passes them.
        var sessions = subjects.Select(x => x with { Cache = new LimitCache() }).ToArray();

        var report = new BenchReport("limits");
        report.Context("book", $"{book.Limits.Count:N0} limits (users, IPs, /24s) in the book, with fixed caps (30 messages/min per user)");
        report.Context("subjects", "1,024, half limited; one thread");
        report.Context("iterations", iterations.ToString("N0", CultureInfo.InvariantCulture));
        report.Context("session", "as the listener checks: the subject keyed once per session (its LimitCache)");
        report.Context("no cache", "each check looks the address, its /24 and the account up again (a session's first check; the policy services' Dovecot path)");
        // The loop itself (a delegate call and a subject read per iteration), included in every figure below.
        Measure(report, "harness", "loop and delegate, no check", iterations, i => sessions[i & 1023].User.Length > 0);
        Measure(report, "check_connect_session", "CheckConnect, session", iterations, i => book.CheckConnect(sessions[i & 1023]).IsAllowed);
        Measure(report, "check_auth_session", "CheckAuth, session", iterations, i => book.CheckAuth(sessions[i & 1023]).IsAllowed);
        Measure(report, "check_mail_session", "CheckMail, session", iterations, i => book.CheckMail(sessions[i & 1023]).IsAllowed);
        Measure(report, "check_rcpt_session", "CheckRcpt, session", iterations, i => book.CheckRcpt(sessions[i & 1023], 3).IsAllowed);
        Measure(report, "check_connect", "CheckConnect, no cache", iterations, i => book.CheckConnect(subjects[i & 1023]).IsAllowed);
        Measure(report, "check_auth", "CheckAuth, no cache", iterations, i => book.CheckAuth(subjects[i & 1023]).IsAllowed);
        Measure(report, "check_mail", "CheckMail, no cache", iterations, i => book.CheckMail(subjects[i & 1023]).IsAllowed);
        Measure(report, "check_rcpt", "CheckRcpt, no cache", iterations, i => book.CheckRcpt(subjects[i & 1023], 3).IsAllowed);
        return report;
    }

    // This thread's CPU time (CLOCK_THREAD_CPUTIME_ID): on a shared machine the wall time of a loop also
    // counts the time other work had the core; the CPU time is what the checks themselves cost.
    private static long ThreadCpuNanoseconds() => ClockGetTime(3, out var t) == 0 ? t.Seconds * 1_000_000_000 + t.Nanoseconds : 0;

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec time);

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    private static IPAddress Ip(int i) => new([127, (byte)(100 + ((i >> 16) & 0x3f)), (byte)((i >> 8) & 0xff), (byte)(i & 0xff)]);

    private static void Measure(BenchReport report, string key, string label, int iterations, Func<int, bool> check)
    {
        var allowed = 0;
        // Warm-up: buckets created, and long enough (half a second) for the tiered JIT to replace the
        // first, unoptimised code of the checks (call counting starts after 100 ms); 200,000 calls took
        // ~20 ms and left much of the measured loop on that code.
        var warm = Stopwatch.StartNew();
        for (var i = 0; i < 200_000 || warm.ElapsedMilliseconds < 500; i++)
        {
            allowed += check(i) ? 1 : 0;
        }

        var bytes = GC.GetAllocatedBytesForCurrentThread();
        var cpu = ThreadCpuNanoseconds();
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < iterations; i++)
        {
            allowed += check(i) ? 1 : 0;
        }

        watch.Stop();
        cpu = ThreadCpuNanoseconds() - cpu;
        var allocated = GC.GetAllocatedBytesForCurrentThread() - bytes;
        GC.KeepAlive(allowed);
        report.Add(key + "_ns", watch.Elapsed.TotalNanoseconds / iterations, "ns", label + " per check (target ≤ 100)");
        report.Add(key + "_cpu_ns", cpu / (double)iterations, "ns", label + ", this thread's CPU time per check");
        report.Add(key + "_bytes", allocated / (double)iterations, "bytes", label + " allocated per check (target 0)");
    }
}
