using System.Net;
using Analytics.Detection.Scoring;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Simulation;
using Analytics.Simulation.Live;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Analytics.Cli.Hosting;

/// <summary>
/// <c>serve --demo</c>: seeds the demo population (accounts, mailboxes, ground truth) on first start and
/// plays it live against this server's own listener, sped up, round after round, so a newcomer sees
/// within a minute what the system does: sessions recorded, bots flagged, limits applied — and, in
/// the status line, how many sessions of the legitimate (labelled) population were throttled or
/// refused, which should stay at zero.
/// </summary>
internal sealed partial class DemoTraffic : BackgroundService
{
    /// <summary>Simulated time runs this many times faster than real time.</summary>
    public const double Speed = 240;

    private readonly IClickHouseStore _store;
    private readonly SubmissionListener _listener;
    private readonly UserDirectory _users;
    private readonly RecipientDirectory _recipients;
    private readonly EventSink _sink;
    private readonly LimitBook _book;
    private readonly ScorerService _scorer;
    private readonly ILimitControl _limits;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public DemoTraffic(IClickHouseStore store, SubmissionListener listener, UserDirectory users, RecipientDirectory recipients, EventSink sink,
        LimitBook book, ScorerService scorer, ILimitControl limits, IHostApplicationLifetime lifetime, TimeProvider time, ILogger<DemoTraffic> logger)
    {
        _store = store;
        _listener = listener;
        _users = users;
        _recipients = recipients;
        _sink = sink;
        _book = book;
        _scorer = scorer;
        _limits = limits;
        _lifetime = lifetime;
        _time = time;
        _logger = logger;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Wait until the listener is bound.
        var started = new TaskCompletionSource();
        using (_lifetime.ApplicationStarted.Register(() => started.TrySetResult()))
        {
            await started.Task.WaitAsync(stoppingToken);
        }

        var submission = _listener.Endpoints.FirstOrDefault(e => e.Role == ListenerRole.Submission && !e.ImplicitTls)?.EndPoint;
        var mx = _listener.Endpoints.FirstOrDefault(e => e.Role == ListenerRole.Mx)?.EndPoint;
        if (submission is null || mx is null)
        {
            LogNoEndpoints(_logger);
            return;
        }

        var demoStart = _time.GetUtcNow().UtcDateTime;
        var report = ReportAsync(demoStart, stoppingToken);
        var scenario = Scenario.Load("demo");
        var registered = new HashSet<string>(StringComparer.Ordinal);

        // First the population's recent past, fast, so that accounts have the history their normal
        // is learnt from (a newsletter's 500 recipients an hour is normal only against its own past).
        if (await IsEmptyAsync(stoppingToken))
        {
            var history = WorldBuilder.Build(scenario, _time.GetUtcNow().AddDays(-scenario.Days));
            var result = await FastSimulation.RunAsync(_store, history, null, _time, null, stoppingToken);
            LogHistory(_logger, result.Events, scenario.Days);
        }

        for (var round = 0; !stoppingToken.IsCancellationRequested; round++)
        {
            var world = WorldBuilder.Build(scenario, _time.GetUtcNow());
            var (users, mailboxes) = await LiveSimulation.SeedAsync(_store, world, 10_000, stoppingToken);
            await LabelWriter.WriteAsync(_store, world.Labels, FastSimulation.RunId(world) + "-demo", _time.GetUtcNow(), stoppingToken);
            await _users.RefreshAsync(stoppingToken);
            await _recipients.RefreshAsync(stoppingToken);
            await RegisterBulkSendersAsync(world, registered, stoppingToken);
            LogRound(_logger, round + 1, users, mailboxes, world.Labels.Count, Speed, Loopback(submission), Loopback(mx));
            try
            {
                await LiveSimulation.RunAsync(world, new LiveTargets(Loopback(submission), Loopback(mx)), Speed, _time, 64, null, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
        }

        await report;
    }

    /// <summary>
    /// The population's list servers are registered as bulk senders (an allow override, as an operator
    /// does for its own newsletters): demo time runs <see cref="Speed"/> times faster than the clock the
    /// fixed per-account cap counts in, so a newsletter sending a dozen messages a simulated minute would
    /// meet the cap at thousands a real minute. The fast path still applies to them.
    /// </summary>
    private async Task RegisterBulkSendersAsync(World world, HashSet<string> registered, CancellationToken cancellationToken)
    {
        string[] bulk = [WorldBuilder.Populations.Newsletter, WorldBuilder.Populations.TicketSystem, WorldBuilder.Populations.MailingList];
        foreach (var label in world.Labels.Where(l => l.Kind == EntityKind.User && l.Class == ThreatClass.Benign && bulk.Contains(l.Variant)))
        {
            if (registered.Add(label.Entity))
            {
                await _limits.ApplyAsync(new LimitOverride(EntityRef.User(AccountName.Normalize(label.Entity)), OverrideKind.Allow,
                    $"demo: registered bulk sender ({label.Variant}); demo time runs {Speed}x the fixed cap's clock", "demo"), cancellationToken);
                LogRegistered(_logger, label.Entity, label.Variant);
            }
        }
    }

    /// <summary>Sessions since the demo started from addresses labelled legitimate only, and how many the server throttled or refused.</summary>
    private async Task<(ulong Sessions, ulong Throttled, ulong Refused)> LegitimateHarmAsync(DateTime since, CancellationToken cancellationToken)
    {
        const string sql = """
            SELECT count(), countIf(throttled), countIf(refused)
            FROM
            (
                SELECT any(client_ip) AS ip, countIf(kind = 'throttle') > 0 AS throttled,
                       countIf(kind = 'throttle' AND reply_code >= 400 AND reply_code != 550) > 0 AS refused
                FROM events
                WHERE ts >= {since:DateTime64(3, 'UTC')}
                GROUP BY session_id
            )
            WHERE ip IN (SELECT ip FROM labels FINAL WHERE entity_kind = 'ip' AND class = 'benign')
              AND ip NOT IN (SELECT ip FROM labels FINAL WHERE entity_kind = 'ip' AND class != 'benign')
            """;
        var r = await _store.QueryAsync(sql, QueryParameters.Of(("since", since)), cancellationToken);
        return ((ulong)r.Rows[0][0]!, (ulong)r.Rows[0][1]!, (ulong)r.Rows[0][2]!);
    }

    private async Task<bool> IsEmptyAsync(CancellationToken cancellationToken) =>
        (await _store.QueryAsync("SELECT count() FROM events", null, cancellationToken)).Scalar<ulong>() == 0;

    private async Task ReportAsync(DateTime since, CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(15), _time);
        while (await timer.WaitForNextTickAsync(stoppingToken).AsTask().ContinueWith(t => t is { IsCompletedSuccessfully: true, Result: true }, TaskScheduler.Default))
        {
            var stats = _sink.Stats;
            var pass = _scorer.LastPass;
            var limits = _book.Limits;
            (ulong Sessions, ulong Throttled, ulong Refused) legit = default;
            try
            {
                legit = await LegitimateHarmAsync(since, stoppingToken);
            }
            catch (ClickHouseException)
            {
                // The figure is missing from one status line; the next one tries again.
            }

            LogStatus(_logger, stats.Published, pass?.Entities ?? 0, pass?.Flagged ?? 0, pass?.ModelVersion ?? "-",
                limits.Count(l => l.Level == LimitLevel.Block), limits.Count(l => l.Level == LimitLevel.Throttle),
                legit.Sessions, legit.Throttled, legit.Refused);
        }
    }

    // A listener bound to 0.0.0.0 or [::] is reached on loopback.
    private static IPEndPoint Loopback(IPEndPoint endpoint) =>
        endpoint.Address.Equals(IPAddress.Any) || endpoint.Address.Equals(IPAddress.IPv6Any) ? new IPEndPoint(IPAddress.Loopback, endpoint.Port) : endpoint;

    [LoggerMessage(Level = LogLevel.Information, Message = "demo round {Round}: {Users} new accounts, {Mailboxes} mailboxes, {Labels} labelled entities; playing two simulated days at {Speed}x against submission {Submission} and mx {Mx}")]
    private static partial void LogRound(ILogger logger, int round, int users, int mailboxes, int labels, double speed, IPEndPoint submission, IPEndPoint mx);

    [LoggerMessage(Level = LogLevel.Information, Message = "demo: {Events} events recorded; last scoring pass {Entities} active entities, {Flagged} flagged (model {Model}); limits in force: {Blocked} blocked, {Throttled} throttled; legitimate sessions: {LegitSessions}, throttled {LegitThrottled}, refused {LegitRefused}")]
    private static partial void LogStatus(ILogger logger, long events, int entities, int flagged, string model, int blocked, int throttled, ulong legitSessions, ulong legitThrottled, ulong legitRefused);

    [LoggerMessage(Level = LogLevel.Information, Message = "demo: {Account} registered as a bulk sender ({Kind}): allowed past the fixed per-account cap")]
    private static partial void LogRegistered(ILogger logger, string account, string kind);

    [LoggerMessage(Level = LogLevel.Information, Message = "demo: recorded the population's last {Days} days first ({Events} events, fast mode) so accounts have a history")]
    private static partial void LogHistory(ILogger logger, long events, int days);

    [LoggerMessage(Level = LogLevel.Warning, Message = "demo: no submission or MX endpoint to play against")]
    private static partial void LogNoEndpoints(ILogger logger);
}
