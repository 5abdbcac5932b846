using Analytics.Cli.Admin;
using Analytics.Events;
using Analytics.Store;
using Analytics.Store.Embedded;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Serilog;
using Serilog.Extensions.Logging;

namespace Analytics.Cli.Hosting;

/// <summary>Assembles <c>serve</c>: store, migrations, event sink, admin socket; owns their start and stop order.</summary>
internal static class ServerHost
{
    public static async Task<int> RunAsync(AnalyticsSettings settings, CliIO io, CancellationToken cancellationToken)
    {
        using var serilog = Logging.CreateLogger(settings.Configuration);
        var loggerFactory = new SerilogLoggerFactory(serilog);
        var log = loggerFactory.CreateLogger("Analytics.Serve");

        var sinkOptions = settings.Configuration.GetSection("Events").Get<EventSinkOptions>() ?? new EventSinkOptions();
        OptionsValidation.ThrowIfInvalid(("Store", settings.Store), ("Events", sinkOptions));

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
            builder.Services.AddSingleton(settings);
            builder.Services.AddSingleton(sp => new ServerContext(store, sp));
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
            AdminEndpoint.Listen(builder.WebHost, settings.DataDirectory);

            await using var app = builder.Build();
            AdminEndpoint.Map(app, settings.DataDirectory);
            app.Lifetime.ApplicationStarted.Register(() =>
                log.LogInformation("analytics {Version} serving; data {DataDirectory}; store {Backend} at {Location}; admin socket {Socket}",
                    AnalyticsCli.Version, settings.DataDirectory, store.Backend, store.Location, AdminEndpoint.SocketPath(settings.DataDirectory)));
            await app.RunAsync(cancellationToken);
        }
        finally
        {
            // The listener is stopped by now; what it published is flushed before the store closes.
            await sink.DisposeAsync();
        }

        log.LogInformation("analytics stopped");
        return 0;
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
