using System.Net.Sockets;
using Analytics.Cli.Admin;
using Analytics.Events;
using Analytics.Store;
using Analytics.Submission;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Serilog;

namespace Analytics.Cli.Hosting;

/// <summary><c>serve</c>: the whole system in one process, until SIGINT/SIGTERM.</summary>
internal static partial class ServerHost
{
    public static async Task<int> RunAsync(AnalyticsSettings settings, ServeOverrides overrides, CancellationToken cancellationToken)
    {
        using var serilog = Logging.CreateLogger(settings.Configuration);
        // The content root is the install directory, not the working directory: the host watches its content
        // root (recursively, for appsettings changes), and an operator's working directory usually holds the data
        // directory (default ./data): every spool file and store part written and deleted there woke the watcher
        // (an inotify event, a stat per file, a watch per new directory). Configuration comes from settings anyway.
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.AddSerilog(serilog, dispose: false);
        builder.AddAnalytics(settings, overrides);
        await using var app = builder.Build();
        app.ValidateOptions();
        await app.Services.GetRequiredService<StoreHandle>().OpenAsync(cancellationToken);
        app.MapAnalytics();
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Analytics.Serve");
        app.Lifetime.ApplicationStarted.Register(() => LogReady(log, app.Services, settings));
        try
        {
            await app.RunAsync(cancellationToken);
        }
        catch (InvalidOperationException ex) when (ex.InnerException is SocketException)
        {
            // A port in use or not permitted: the listener says which one.
            throw new CliException(ex.Message, 2);
        }

        LogStopped(log);
        return 0;
    }

    private static void LogReady(Microsoft.Extensions.Logging.ILogger log, IServiceProvider services, AnalyticsSettings settings)
    {
        var endpoints = services.GetRequiredService<SubmissionListener>().Endpoints;
        string Role(ListenerRole role, bool implicitTls) =>
            string.Join(", ", endpoints.Where(e => e.Role == role && e.ImplicitTls == implicitTls).Select(e => e.EndPoint.ToString())) is { Length: > 0 } list ? list : "none";
        var store = services.GetRequiredService<IClickHouseStore>();
        LogServing(log, AnalyticsCli.Version, Role(ListenerRole.Submission, false), Role(ListenerRole.Submission, true), Role(ListenerRole.Mx, false));
        LogWhere(log, settings.DataDirectory, store.Backend, store.Location, AdminEndpoint.SocketPath(settings.DataDirectory));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "analytics {Version} serving; submission {Submission}; submission implicit TLS {ImplicitTls}; mx {Mx}")]
    private static partial void LogServing(Microsoft.Extensions.Logging.ILogger logger, string version, string submission, string implicitTls, string mx);

    [LoggerMessage(Level = LogLevel.Information, Message = "data {DataDirectory}; store {Backend} at {Location}; admin socket {Socket}")]
    private static partial void LogWhere(Microsoft.Extensions.Logging.ILogger logger, string dataDirectory, string backend, string location, string socket);

    [LoggerMessage(Level = LogLevel.Information, Message = "analytics stopped")]
    private static partial void LogStopped(Microsoft.Extensions.Logging.ILogger logger);
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
