using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Analytics.Submission;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli.Chaos;

/// <summary>One named failure scenario of <c>analytics chaos</c>.</summary>
internal abstract class ChaosScenario
{
    public abstract string Name { get; }

    public abstract string Description { get; }

    public virtual IReadOnlyList<Option> Options => [];

    /// <summary>Runs the scenario, adding figures and checks to <paramref name="report"/>; progress lines go to <paramref name="progress"/>.</summary>
    /// <exception cref="ChaosSkipException">The scenario cannot run here (it says why).</exception>
    public abstract Task RunAsync(ParseResult parse, ChaosReport report, TextWriter progress, CancellationToken cancellationToken);

    protected static string TempDirectory(string name)
    {
        var path = Path.Combine(Path.GetTempPath(), $"analytics-chaos-{name}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>An embedded store of the scenario's own in <paramref name="directory"/>, schema applied.</summary>
    protected static async Task<EmbeddedStore> OpenStoreAsync(string directory, CancellationToken cancellationToken)
    {
        var store = EmbeddedStore.Open(directory);
        await new Migrator(store, NullLogger.Instance).ApplyAsync(new SchemaSettings(), cancellationToken);
        return store;
    }

    /// <summary>The listener's directories over <paramref name="store"/>: one account (when given) and the mailboxes of <paramref name="mailboxes"/> (the import format), loaded.</summary>
    protected static async Task<(UserDirectory Users, RecipientDirectory Recipients)> DirectoriesAsync(
        IClickHouseStore store, (string Name, string Password)? account, string mailboxes, CancellationToken cancellationToken)
    {
        var hasher = new PasswordHasher(1000);
        var userStore = new UserStore(store, hasher);
        if (account is { } a)
        {
            await userStore.AddAsync(a.Name, a.Password, cancellationToken);
        }

        var recipientStore = new RecipientStore(store);
        await recipientStore.ImportAsync(new StringReader(mailboxes), cancellationToken);
        var users = new UserDirectory(userStore, hasher, NullLogger<UserDirectory>.Instance);
        var recipients = new RecipientDirectory(recipientStore, NullLogger<RecipientDirectory>.Instance);
        await users.RefreshAsync(cancellationToken);
        await recipients.RefreshAsync(cancellationToken);
        return (users, recipients);
    }

    protected static void TryDelete(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Events stored, distinct ids among them (the session id carries the id), and the aggregates' count of them.</summary>
    protected static async Task<(ulong Rows, ulong Distinct, ulong Aggregated)> CountAsync(IClickHouseStore store, string node, CancellationToken cancellationToken)
    {
        var p = QueryParameters.Of(("n", node));
        var r = await store.QueryAsync("SELECT count(), uniqExact(session_id) FROM events WHERE node = {n:String}", p, cancellationToken);
        var a = await store.QueryAsync("SELECT sum(events) FROM activity WHERE entity_kind = 'user' AND entity = {n:String}", p, cancellationToken);
        return ((ulong)r.Rows[0][0]!, (ulong)r.Rows[0][1]!, Convert.ToUInt64(a.Rows[0][0], CultureInfo.InvariantCulture));
    }

    /// <summary>Event number <paramref name="id"/> of a chaos run: its id is its session id; its user is the run's node name.</summary>
    public static SmtpEvent Event(string node, long id, DateTimeOffset at) => new()
    {
        Timestamp = at,
        Node = node,
        Role = ListenerRole.Mx,
        SessionId = (ulong)id,
        Kind = (id % 3) switch { 0 => EventKind.Connect, 1 => EventKind.Rcpt, _ => EventKind.Close },
        ClientIp = new IPAddress([127, 77, (byte)(id >> 8), (byte)id]),
        User = node,
        Outcome = EventOutcome.Ok,
        Recipient = id % 3 == 1 ? "r" + (id % 5000).ToString(CultureInfo.InvariantCulture) + "@chaos.test" : "",
        RecipientDomain = id % 3 == 1 ? "chaos.test" : "",
    };
}

/// <summary>A plain SMTP client over a stream, a line at a time: a reply is read to its last line; "" when the server closed. Leaves the stream open.</summary>
internal sealed class ChaosSmtp(Stream stream, TimeSpan timeout) : IDisposable
{
    private readonly StreamReader _reader = new(stream, System.Text.Encoding.ASCII, detectEncodingFromByteOrderMarks: false, bufferSize: 1024, leaveOpen: true);

    public void Dispose() => _reader.Dispose();

    public async Task<string> ReplyAsync(CancellationToken cancellationToken)
    {
        string? line;
        do
        {
            line = await _reader.ReadLineAsync(cancellationToken).AsTask().WaitAsync(timeout, cancellationToken);
        }
        while (line is { Length: > 3 } && line[3] == '-');
        return line ?? "";
    }

    public async Task<string> CommandAsync(string line, CancellationToken cancellationToken)
    {
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(line + "\r\n"), cancellationToken);
        return await ReplyAsync(cancellationToken);
    }
}

internal sealed class ChaosSkipException(string message) : Exception(message);

internal enum ChaosOutcome
{
    Pass,
    Fail,
    Skip,
}

/// <summary>Figures and checks of one scenario run; PASS when every check holds.</summary>
internal sealed class ChaosReport(string name)
{
    private readonly List<(string Key, double Value, string Unit, string Label)> _figures = [];
    private readonly List<(string Name, bool Ok, string Detail)> _checks = [];
    private string? _skipped;

    public ChaosOutcome Outcome => _skipped is not null ? ChaosOutcome.Skip : _checks.Count > 0 && _checks.All(c => c.Ok) ? ChaosOutcome.Pass : ChaosOutcome.Fail;

    public void Add(string key, double value, string unit, string label) => _figures.Add((key, value, unit, label));

    public void Check(string checkName, bool ok, string detail) => _checks.Add((checkName, ok, detail));

    public void Skip(string reason) => _skipped = reason;

    public async Task WriteAsync(TextWriter output, bool json)
    {
        var outcome = Outcome.ToString().ToUpperInvariant();
        if (json)
        {
            var figures = new JsonObject();
            foreach (var f in _figures)
            {
                figures[f.Key] = Math.Round(f.Value, 4);
            }

            var checks = new JsonObject();
            foreach (var c in _checks)
            {
                checks[c.Name] = new JsonObject { ["ok"] = c.Ok, ["detail"] = c.Detail };
            }

            var obj = new JsonObject { ["scenario"] = name, ["outcome"] = outcome, ["figures"] = figures, ["checks"] = checks };
            if (_skipped is not null)
            {
                obj["skipped"] = _skipped;
            }

            await output.WriteLineAsync(obj.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
            return;
        }

        await output.WriteLineAsync($"chaos {name}");
        foreach (var f in _figures)
        {
            await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  {f.Label,-52} {Format(f.Value),14} {f.Unit}"));
        }

        foreach (var c in _checks)
        {
            await output.WriteLineAsync($"  [{(c.Ok ? "ok" : "FAILED")}] {c.Name}: {c.Detail}");
        }

        await output.WriteLineAsync(_skipped is null ? outcome : $"SKIP: {_skipped}");
    }

    private static string Format(double v) =>
        Math.Abs(v) >= 100 ? v.ToString("N0", CultureInfo.InvariantCulture) : v.ToString("0.###", CultureInfo.InvariantCulture);
}

/// <summary>Steady traffic into a sink: a fixed rate of events with increasing ids, counting what the sink accepted.</summary>
internal sealed class ChaosTraffic : IAsyncDisposable
{
    private readonly EventSink _sink;
    private readonly string _node;
    private readonly int _rate;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _next;
    private long _accepted;
    private long _refused;
    private long _threw;

    public ChaosTraffic(EventSink sink, string node, int ratePerSecond)
    {
        _sink = sink;
        _node = node;
        _rate = ratePerSecond;
        _loop = Task.Run(RunAsync);
    }

    public long Sent => Interlocked.Read(ref _next);

    public long Accepted => Interlocked.Read(ref _accepted);

    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Publish calls that threw (must stay 0: a session would have failed).</summary>
    public long Threw => Interlocked.Read(ref _threw);

    private async Task RunAsync()
    {
        var started = DateTimeOffset.UtcNow;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!_stop.IsCancellationRequested)
        {
            var due = (long)(clock.Elapsed.TotalSeconds * _rate);
            while (Interlocked.Read(ref _next) < due)
            {
                var id = Interlocked.Increment(ref _next) - 1;
                try
                {
                    if (_sink.Publish(ChaosScenario.Event(_node, id, started.AddMilliseconds(id % 600_000 / 10.0))))
                    {
                        Interlocked.Increment(ref _accepted);
                    }
                    else
                    {
                        Interlocked.Increment(ref _refused);
                    }
                }
                catch (Exception)
                {
                    Interlocked.Increment(ref _threw);
                }
            }

            try
            {
                await Task.Delay(10, _stop.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
    }
}
