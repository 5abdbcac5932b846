using Analytics.Cli.Admin;
using Analytics.Detection.Scoring;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Policy;
using Analytics.Review;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Submission;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Cli.Hosting;

/// <summary>What the <c>serve</c> command line says on top of the configuration.</summary>
/// <param name="Submission">--submission endpoints; with these or <paramref name="Mx"/>, the command line replaces every configured endpoint.</param>
/// <param name="Mx">--mx endpoints.</param>
/// <param name="Http">--http: where the review console and /metrics listen (Review:Http).</param>
/// <param name="Demo">--demo: seed the demo population and play it live against this server.</param>
internal sealed record ServeOverrides(IReadOnlyList<string> Submission, IReadOnlyList<string> Mx, string? Http = null, bool Demo = false)
{
    public static ServeOverrides None { get; } = new([], []);

    public bool ReplaceEndpoints => Submission.Count > 0 || Mx.Count > 0;

    /// <summary>
    /// The endpoints, applied once as the listener's options are built (and so validated with them).
    /// Lists from configuration files merge index by index, so a replacement is a post-configuration
    /// rather than a configuration key: a configured 0.0.0.0:25 never comes on top of the command line.
    /// </summary>
    public void ApplyEndpoints(SubmissionOptions options)
    {
        if (ReplaceEndpoints)
        {
            options.Enabled = true; // endpoints on the command line: a listener is wanted
            options.SubmissionEndpoints = [.. Submission];
            options.MxEndpoints = [.. Mx];
            options.ImplicitTlsEndpoints = [];
        }
        else if (Demo)
        {
            // The demo runs as an ordinary user: unprivileged loopback ports unless told otherwise.
            options.SubmissionEndpoints = ["127.0.0.1:2587"];
            options.MxEndpoints = ["127.0.0.1:2525"];
            options.ImplicitTlsEndpoints = [];
        }
    }
}

/// <summary>The store of <c>serve</c>, opened and migrated once the options are known to be valid.</summary>
internal sealed class StoreHandle : IAsyncDisposable
{
    private readonly AnalyticsSettings _settings;
    private readonly ILoggerFactory _logging;
    private IClickHouseStore? _store;

    public StoreHandle(AnalyticsSettings settings, ILoggerFactory logging)
    {
        _settings = settings;
        _logging = logging;
    }

    public IClickHouseStore Store => _store ?? throw new InvalidOperationException("The store is used before serve opened it.");

    public async Task OpenAsync(CancellationToken cancellationToken)
    {
        try
        {
            _store = await StoreFactory.OpenAndMigrateAsync(_settings.Store, _settings.DataDirectory, _logging.CreateLogger("Analytics.Store"), cancellationToken);
        }
        catch (Exception ex) when (ex is DataDirectoryInUseException or StoreUnavailableException)
        {
            throw new CliException(ex.Message, 2);
        }
        catch (ClickHouseException ex)
        {
            throw new CliException("The store's schema could not be brought up to date: " + ex.Message, 2);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }
    }
}

/// <summary>
/// <c>serve</c>, composed: every part registers itself from its own configuration section, validated
/// once at start; the order of registration is the order things start and the reverse of how they
/// stop (the listener drains, the sink flushes, the store closes).
/// </summary>
internal static class AnalyticsServices
{
    public static WebApplicationBuilder AddAnalytics(this WebApplicationBuilder builder, AnalyticsSettings settings, ServeOverrides overrides)
    {
        builder.Configuration.AddConfiguration(settings.Configuration);
        builder.Configuration.AddInMemoryCollection(CommandLineSettings(settings, overrides));
        var services = builder.Services;
        services.AddSingleton(settings);
        services.AddSingleton(TimeProvider.System);
        services.AddSectionOptions<StoreOptions>("Store");
        services.AddSingleton<StoreHandle>();
        services.AddSingleton(sp => sp.GetRequiredService<StoreHandle>().Store);
        services.AddSingleton(sp => new ServerContext(sp.GetRequiredService<IClickHouseStore>(), sp));
        services.AddEventSink(settings.DataDirectory);
        services.AddMetricsEndpoint();
        services.AddLimits();
        services.AddSubmission();
        services.PostConfigure<SubmissionOptions>(overrides.ApplyEndpoints);
        services.AddDelivery(discardWhenUnconfigured: overrides.Demo);
        services.AddPolicyServices();
        services.AddDetection(Environment.MachineName);
        services.AddReviewConsole(builder.Configuration);
        if (overrides.Demo)
        {
            services.AddHostedService<DemoTraffic>();
        }

        // The listener drains within its own deadline; the host must wait at least that long.
        services.AddOptions<HostOptions>().Configure<IOptions<LimitsOptions>>((host, limits) =>
            host.ShutdownTimeout = TimeSpan.FromSeconds(30) + limits.Value.Session.ShutdownDeadline);
        AdminEndpoint.Listen(builder, settings.DataDirectory);
        builder.WebHost.ConfigureReviewEndpoint(ReviewOptions.FromConfiguration(builder.Configuration));
        return builder;
    }

    /// <summary>The sink from the <c>Events</c> section; its spool defaults to <c>DATA/spool/events</c>.</summary>
    private static IServiceCollection AddEventSink(this IServiceCollection services, string dataDirectory)
    {
        services.AddSectionOptions<EventSinkOptions>("Events");
        services.AddSingleton(sp => new EventSink(sp.GetRequiredService<IClickHouseStore>(), sp.GetRequiredService<IOptions<EventSinkOptions>>().Value,
            sp.GetRequiredService<IOptions<EventSinkOptions>>().Value.SpoolDirectory ?? Path.Combine(dataDirectory, "spool", "events"),
            sp.GetRequiredService<ILogger<EventSink>>()));
        services.AddSingleton<IEventPublisher>(sp => sp.GetRequiredService<EventSink>());
        return services;
    }

    public static WebApplication MapAnalytics(this WebApplication app)
    {
        AdminEndpoint.Map(app);
        app.MapReviewConsole();
        app.MapMetrics();
        return app;
    }

    /// <summary>
    /// Every options class, validated once with all problems listed, before the store or a port opens.
    /// (The host's own start-up validation then finds the options already built.)
    /// </summary>
    public static void ValidateOptions(this WebApplication app)
    {
        try
        {
            app.Services.GetService<IStartupValidator>()?.Validate();
        }
        catch (OptionsValidationException ex)
        {
            throw Invalid(ex.Failures);
        }
        catch (AggregateException ex) when (ex.InnerExceptions.All(e => e is OptionsValidationException))
        {
            throw Invalid(ex.InnerExceptions.Cast<OptionsValidationException>().SelectMany(e => e.Failures));
        }
        catch (InvalidOperationException ex) when (ex.InnerException is ArgumentException or FormatException)
        {
            // A value the binder cannot convert ('abc' for a number), from any layer: file or ANALYTICS_*.
            throw Invalid([Commands.ConfigCommand.Explain(ex)]);
        }
    }

    /// <summary>One problem: one line. Several: one line each, all at once.</summary>
    private static CliException Invalid(IEnumerable<string> failures)
    {
        var list = failures.Distinct().ToList();
        return new CliException(list.Count == 1 ? "Invalid configuration: " + list[0] : "Invalid configuration:\n  " + string.Join("\n  ", list), 2);
    }

    // What the command line says that configuration can say: the data directory wins over
    // Submission:DataDirectory when given (or when that is unset); --http is Review:Http.
    private static Dictionary<string, string?> CommandLineSettings(AnalyticsSettings settings, ServeOverrides overrides)
    {
        var values = new Dictionary<string, string?>
        {
            [$"{SubmissionOptions.SectionName}:{nameof(SubmissionOptions.DataDirectory)}"] = settings.SubmissionDataDirectory,
        };

        if (overrides.Http is { } http)
        {
            values[$"{ReviewOptions.SectionName}:Http"] = http;
        }

        return values;
    }
}
