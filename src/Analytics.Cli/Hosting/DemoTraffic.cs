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
/// within a minute what the system does: sessions recorded, bots flagged, limits applied.
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
    private readonly IHostApplicationLifetime _lifetime;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public DemoTraffic(IClickHouseStore store, SubmissionListener listener, UserDirectory users, RecipientDirectory recipients, EventSink sink,
        LimitBook book, ScorerService scorer, IHostApplicationLifetime lifetime, TimeProvider time, ILogger<DemoTraffic> logger)
    {
        _store = store;
        _listener = listener;
        _users = users;
        _recipients = recipients;
        _sink = sink;
        _book = book;
        _scorer = scorer;
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

        var report = ReportAsync(stoppingToken);
        var scenario = Scenario.Load("demo");

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

    private async Task<bool> IsEmptyAsync(CancellationToken cancellationToken) =>
        (await _store.QueryAsync("SELECT count() FROM events", null, cancellationToken)).Scalar<ulong>() == 0;

    private async Task ReportAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(15), _time);
        while (await timer.WaitForNextTickAsync(stoppingToken).AsTask().ContinueWith(t => t is { IsCompletedSuccessfully: true, Result: true }, TaskScheduler.Default))
        {
            var stats = _sink.Stats;
            var pass = _scorer.LastPass;
            var limits = _book.Limits;
            LogStatus(_logger, stats.Published, pass?.Entities ?? 0, pass?.Flagged ?? 0, pass?.ModelVersion ?? "-",
                limits.Count(l => l.Level == LimitLevel.Block), limits.Count(l => l.Level == LimitLevel.Throttle));
        }
    }

    // A listener bound to 0.0.0.0 or [::] is reached on loopback.
    private static IPEndPoint Loopback(IPEndPoint endpoint) =>
        endpoint.Address.Equals(IPAddress.Any) || endpoint.Address.Equals(IPAddress.IPv6Any) ? new IPEndPoint(IPAddress.Loopback, endpoint.Port) : endpoint;

    [LoggerMessage(Level = LogLevel.Information, Message = "demo round {Round}: {Users} new accounts, {Mailboxes} mailboxes, {Labels} labelled entities; playing two simulated days at {Speed}x against submission {Submission} and mx {Mx}")]
    private static partial void LogRound(ILogger logger, int round, int users, int mailboxes, int labels, double speed, IPEndPoint submission, IPEndPoint mx);

    [LoggerMessage(Level = LogLevel.Information, Message = "demo: {Events} events recorded; last scoring pass {Entities} active entities, {Flagged} flagged (model {Model}); limits in force: {Blocked} blocked, {Throttled} throttled")]
    private static partial void LogStatus(ILogger logger, long events, int entities, int flagged, string model, int blocked, int throttled);

    [LoggerMessage(Level = LogLevel.Information, Message = "demo: recorded the population's last {Days} days first ({Events} events, fast mode) so accounts have a history")]
    private static partial void LogHistory(ILogger logger, long events, int days);

    [LoggerMessage(Level = LogLevel.Warning, Message = "demo: no submission or MX endpoint to play against")]
    private static partial void LogNoEndpoints(ILogger logger);
}
