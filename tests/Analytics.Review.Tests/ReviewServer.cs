using System.Net;
using System.Net.Sockets;
using Analytics.Detection.Scoring;
using Analytics.Limits;
using Analytics.Review;
using Analytics.Review.Reviewers;
using Analytics.Simulation;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Store.Schema;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Xunit;

[assembly: AssemblyFixture(typeof(Analytics.Review.Tests.ReviewServer))]

namespace Analytics.Review.Tests;

/// <summary>
/// The console as serve runs it, once per test assembly (chDB allows one embedded engine per process):
/// the embedded store in a temp directory with every migration, a simulated day of the small scenario
/// scored by the rules, and a WebApplication composed with AddReviewConsole / ConfigureReviewEndpoint /
/// MapReviewConsole on a free loopback port.
/// </summary>
public sealed class ReviewServer : IAsyncLifetime
{
    public const string AnalystPassword = "analyst-pass-1";
    public const string ViewerPassword = "viewer-pass-1";

    /// <summary>The address the test server trusts as a TLS-terminating reverse proxy.</summary>
    public const string TrustedProxy = "127.0.0.42";

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "analytics-review-" + Guid.NewGuid().ToString("N")[..10]);
    private WebApplication? _app;

    public IClickHouseStore Store { get; private set; } = null!;

    public ILimitControl Limits { get; private set; } = null!;

    public LimitPolicy Policy { get; private set; } = null!;

    public ReviewerStore Reviewers { get; private set; } = null!;

    public Uri BaseAddress { get; private set; } = null!;

    public TimeSpan SetupTime { get; private set; }

    public async ValueTask InitializeAsync()
    {
        var started = System.Diagnostics.Stopwatch.StartNew();
        Directory.CreateDirectory(_dir);
        Store = EmbeddedStore.Open(Path.Combine(_dir, "data"));
        await new Migrator(Store, NullLogger.Instance).ApplyAsync(new SchemaSettings());
        // The real limit policy in front of the listener's static book, as serve wires it (AddDynamicLimits).
        var limits = new LimitsOptions();
        Policy = new LimitPolicy(new LimitRecords(Store, limits.Dynamic.Node), new LimitBook(limits, TimeProvider.System), limits.Dynamic, TimeProvider.System, NullLogger.Instance);
        await SimulateAndScoreAsync();

        var port = FreePort();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Review:Http"] = $"127.0.0.1:{port}",
            ["Review:LoginFailuresPerName"] = "3",
            ["Review:LoginFailuresPerIp"] = "6",
            ["Review:Pbkdf2Iterations"] = "1000",
            ["Review:QueueRefresh"] = "00:00:02",
            // One trusted reverse proxy (SecurityTests): its X-Forwarded-* headers count, nobody else's do.
            ["Review:TrustedProxies:0"] = ReviewServer.TrustedProxy,
        });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton(Store);
        builder.Services.AddSingleton<ILimitControl>(Policy);
        builder.Services.AddReviewConsole(builder.Configuration);
        builder.WebHost.ConfigureReviewEndpoint(ReviewOptions.FromConfiguration(builder.Configuration));
        _app = builder.Build();
        _app.MapReviewConsole();
        await _app.StartAsync();

        Limits = _app.Services.GetRequiredService<ILimitControl>();
        Reviewers = _app.Services.GetRequiredService<ReviewerStore>();
        await Reviewers.AddAsync("ana", AnalystPassword, ReviewerRoles.Analyst);
        await Reviewers.AddAsync("vic", ViewerPassword, ReviewerRoles.Viewer);
        BaseAddress = new Uri($"http://127.0.0.1:{port}/");
        SetupTime = started.Elapsed;
    }

    /// <summary>A day of the small scenario ending about now, scored by the rules every 30 minutes.</summary>
    private async Task SimulateAndScoreAsync()
    {
        var start = DateTimeOffset.UtcNow.AddHours(-23);
        start = new DateTimeOffset(start.Year, start.Month, start.Day, start.Hour, 0, 0, TimeSpan.Zero);
        var world = WorldBuilder.Build(Scenario.Load("small"), start);
        // The console is under test, not the fast path: without its cross-session holds the harvesters
        // probe long enough for the rules (10 unknown recipients in 10 minutes) to flag them.
        var noHolds = new LimitsOptions { FastPath = { UnknownRecipientsPerIp = 100_000, UnknownRecipientsPerNetwork = 100_000, UnknownRecipientsPerUser = 100_000 } };
        await FastSimulation.RunAsync(Store, world, noHolds, TimeProvider.System);
        var noModel = Path.Combine(_dir, "no-model");
        Directory.CreateDirectory(noModel);
        var scorer = new Scorer(Store, new ModelProvider(noModel, NullLogger.Instance), [Policy], NullLogger.Instance, "test");
        var end = DateTime.UtcNow < start.UtcDateTime.AddDays(1) ? DateTime.UtcNow : start.UtcDateTime.AddDays(1);
        for (var t = start.UtcDateTime.AddMinutes(30); t <= end; t = t.AddMinutes(30))
        {
            await scorer.ScoreOnceAsync(t, TimeSpan.FromMinutes(30));
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }

        await Policy.DisposeAsync();
        await Store.DisposeAsync();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
