using Analytics.Cli.Admin;
using Analytics.Detection.Scoring;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Review;
using Analytics.Store;
using Analytics.Store.Embedded;
using Analytics.Submission;
using Analytics.Submission.Delivery;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Serilog;
using Serilog.Extensions.Logging;
using System.Net.Sockets;

namespace Analytics.Cli.Hosting;

/// <summary>What the <c>serve</c> command line says about the listener, on top of the configuration.</summary>
/// <param name="Submission">--submission endpoints; when this or <paramref name="Mx"/> is given, the command line replaces every configured endpoint.</param>
/// <param name="Mx">--mx endpoints.</param>
/// <param name="DataGiven">--data was given: it wins over Submission:DataDirectory.</param>
internal sealed record ServeOverrides(IReadOnlyList<string> Submission, IReadOnlyList<string> Mx, bool DataGiven)
{
    public static ServeOverrides None { get; } = new([], [], false);

    public bool ReplaceEndpoints => Submission.Count > 0 || Mx.Count > 0;

    /// <summary>--http: where the review console and /metrics listen (Review:Http).</summary>
    public string? Http { get; init; }

    /// <summary>--demo: seed the demo population and play it live against this server.</summary>
    public bool Demo { get; init; }

    /// <summary>Applies the overrides; the spool and keys default to the store's data directory.</summary>
    public void Apply(SubmissionOptions options, AnalyticsSettings settings)
    {
        if (DataGiven || string.IsNullOrWhiteSpace(settings.Configuration[$"{SubmissionOptions.SectionName}:{nameof(SubmissionOptions.DataDirectory)}"]))
        {
            options.DataDirectory = settings.DataDirectory;
        }

        // Several instances side by side: the command line says exactly where each one listens, so
        // an endpoint from the configuration file (say 0.0.0.0:25) never comes on top of it.
        if (!ReplaceEndpoints && Demo)
        {
            // The demo runs as an ordinary user: unprivileged loopback ports unless told otherwise.
            options.SubmissionEndpoints = ["127.0.0.1:2587"];
            options.MxEndpoints = ["127.0.0.1:2525"];
            options.ImplicitTlsEndpoints = [];
        }

        if (ReplaceEndpoints)
        {
            options.SubmissionEndpoints = [.. Submission];
            options.MxEndpoints = [.. Mx];
            options.ImplicitTlsEndpoints = [];
        }
    }
}

/// <summary>
/// Assembles <c>serve</c>: store, migrations, event sink, SMTP listener, admin socket; owns their
/// start and stop order (stop: the listener drains, then the sink flushes, then the store closes).
/// </summary>
internal static class ServerHost
{
    public static async Task<int> RunAsync(AnalyticsSettings settings, ServeOverrides overrides, CliIO io, CancellationToken cancellationToken)
    {
        using var serilog = Logging.CreateLogger(settings.Configuration);
        var loggerFactory = new SerilogLoggerFactory(serilog);
        var log = loggerFactory.CreateLogger("Analytics.Serve");

        var sinkOptions = settings.Configuration.GetSection("Events").Get<EventSinkOptions>() ?? new EventSinkOptions();
        var submissionOptions = BindSubmission(settings, overrides);
        if (overrides.Http is { } http)
        {
            settings.Configuration[$"{ReviewOptions.SectionName}:Http"] = http;
        }

        var reviewOptions = ReviewOptions.FromConfiguration(settings.Configuration);
        var detectionOptions = settings.Configuration.GetSection("Detection").Get<DetectionOptions>() ?? new DetectionOptions();
        var limitOptions = settings.Configuration.GetSection("Limits").Get<LimitPolicyOptions>() ?? new LimitPolicyOptions();
        var deliveryOptions = BindDelivery(settings);
        OptionsValidation.ThrowIfInvalid(
            OptionsValidation.Errors(("Store", settings.Store), ("Events", sinkOptions), ("Submission", submissionOptions),
                ("Detection", detectionOptions), ("Limits", limitOptions))
                .Concat(reviewOptions.Validate())
                .Concat(new SubmissionOptionsValidator().Validate(null, submissionOptions).Failures ?? [])
                .Concat(new DeliveryOptionsValidator().Validate(null, deliveryOptions).Failures ?? []));

        IClickHouseStore store;
        try
        {
            store = await StoreFactory.OpenAndMigrateAsync(settings.Store, settings.DataDirectory, loggerFactory.CreateLogger("Analytics.Store"), cancellationToken);
        }
        catch (DataDirectoryInUseException ex)
        {
            throw new CliException(ex.Message, 2);
        }
        catch (StoreUnavailableException ex)
        {
            throw new CliException(ex.Message, 2);
        }
        catch (ClickHouseException ex)
        {
            throw new CliException("The store's schema could not be brought up to date: " + ex.Message, 2);
        }

        await using var storeLifetime = store;
        var sink = new EventSink(store, sinkOptions, Path.Combine(settings.DataDirectory, "spool", "events"), loggerFactory.CreateLogger<EventSink>());
        try
        {
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
            builder.Configuration.AddConfiguration(settings.Configuration);
            builder.Logging.ClearProviders();
            builder.Services.AddSerilog(serilog, dispose: false);
            builder.Services.AddSingleton(TimeProvider.System);
            builder.Services.AddSingleton(store);
            builder.Services.AddSingleton(sink);
            builder.Services.AddSingleton<IEventPublisher>(sink);
            builder.Services.AddMetrics(builder.Configuration);
            builder.Services.AddSingleton(settings);
            builder.Services.AddSingleton(sp => new ServerContext(store, sp));
            // Dynamic limits go in front of the listener's static book, so they are registered first;
            // the scorer hands its verdicts to the limit policy in-process.
            builder.Services.AddDynamicLimits(builder.Configuration);
            builder.Services.AddSubmission(builder.Configuration);
            builder.Services.AddDelivery(builder.Configuration, discardWhenUnconfigured: overrides.Demo);
            builder.Services.AddDetection(builder.Configuration, Environment.MachineName);
            builder.Services.AddReviewConsole(builder.Configuration);
            if (overrides.Demo)
            {
                builder.Services.AddHostedService<DemoTraffic>();
            }
            builder.Services.PostConfigure<SubmissionOptions>(o => overrides.Apply(o, settings));

            // The listener drains within its own deadline; the host must wait at least that long.
            var shutdown = TimeSpan.FromSeconds(30) + submissionOptions.Limits.ShutdownDeadline;
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = shutdown);
            AdminEndpoint.Listen(builder.WebHost, settings.DataDirectory);
            builder.WebHost.ConfigureReviewEndpoint(reviewOptions);

            await using var app = builder.Build();
            AdminEndpoint.Map(app, settings.DataDirectory);
            app.MapReviewConsole();
            app.MapMetrics();
            app.Lifetime.ApplicationStarted.Register(() =>
            {
                var endpoints = app.Services.GetRequiredService<SubmissionListener>().Endpoints;
                string Role(ListenerRole role, bool implicitTls) =>
                    string.Join(", ", endpoints.Where(e => e.Role == role && e.ImplicitTls == implicitTls).Select(e => e.EndPoint.ToString())) is { Length: > 0 } list ? list : "none";
                log.LogInformation("analytics {Version} serving; submission {Submission}; submission implicit TLS {ImplicitTls}; mx {Mx}",
                    AnalyticsCli.Version, Role(ListenerRole.Submission, false), Role(ListenerRole.Submission, true), Role(ListenerRole.Mx, false));
                log.LogInformation("data {DataDirectory}; store {Backend} at {Location}; admin socket {Socket}",
                    settings.DataDirectory, store.Backend, store.Location, AdminEndpoint.SocketPath(settings.DataDirectory));
            });
            try
            {
                await app.RunAsync(cancellationToken);
            }
            catch (InvalidOperationException ex) when (ex.InnerException is SocketException)
            {
                // A port in use or not permitted: the listener says which one.
                throw new CliException(ex.Message, 2);
            }
            catch (OptionsValidationException ex)
            {
                // A section validated when the host starts (ValidateOnStart), before any port opens.
                OptionsValidation.ThrowIfInvalid(ex.Failures);
                throw;
            }
        }
        finally
        {
            // The host stopped the listener (hosted services stop before the host returns), so every
            // event it published is in the sink: flush them before the store closes.
            await sink.DisposeAsync();
        }

        log.LogInformation("analytics stopped");
        return 0;
    }

    /// <summary>The Delivery section, for validation before anything opens (a value of the wrong type is named too).</summary>
    private static DeliveryOptions BindDelivery(AnalyticsSettings settings)
    {
        try
        {
            return settings.Configuration.GetSection(DeliveryOptions.SectionName).Get<DeliveryOptions>() ?? new DeliveryOptions();
        }
        catch (InvalidOperationException ex)
        {
            throw new CliException("Invalid configuration: " + ex.Message, 2);
        }
    }

    /// <summary>The Submission section as the listener will see it, for validation before anything opens.</summary>
    private static SubmissionOptions BindSubmission(AnalyticsSettings settings, ServeOverrides overrides)
    {
        var options = new SubmissionOptions();
        settings.Configuration.GetSection(SubmissionOptions.SectionName).Bind(options);
        overrides.Apply(options, settings);
        return options;
    }
}

internal static class Logging
{
    public const string Template = "[{Timestamp:HH:mm:ss.fff} {Level:u3}] {SourceContext}: {Message:lj}{NewLine}{Exception}";

    public static Serilog.Core.Logger CreateLogger(IConfiguration configuration)
    {
        var config = new LoggerConfiguration()
            .MinimumLevel.Information()
            .MinimumLevel.Override("Microsoft", Serilog.Events.LogEventLevel.Warning)
            .Enrich.FromLogContext();
        if (configuration.GetSection("Serilog").Exists())
        {
            config.ReadFrom.Configuration(configuration);
        }
        else
        {
            config.WriteTo.Console(outputTemplate: Template, standardErrorFromLevel: Serilog.Events.LogEventLevel.Verbose);
        }

        return config.CreateLogger();
    }
}
