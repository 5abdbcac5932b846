using System.CommandLine;
using Analytics.Cli.Admin;
using Analytics.Store;
using Analytics.Store.Embedded;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Cli;

/// <summary>What a running <c>serve</c> lends to a command it executes for a CLI process.</summary>
internal sealed record ServerContext(IClickHouseStore Store, IServiceProvider Services);

/// <summary>
/// A command's own say in how it is forwarded: <paramref name="Args"/> replaces the command line (a
/// relative path made absolute), <paramref name="Stdin"/> replaces stdin (a password already read here
/// from the terminal).
/// </summary>
internal sealed record Forwarding(string[]? Args = null, string? Stdin = null)
{
    public static Forwarding AsTyped { get; } = new();
}

/// <summary>What every command gets: its terminal, and the running server when executed inside it.</summary>
internal sealed class CommandContext
{
    public CommandContext(CliIO io, ServerContext? server)
    {
        IO = io;
        Server = server;
    }

    public CliIO IO { get; }

    public ServerContext? Server { get; }

    public AnalyticsSettings Settings(ParseResult parse) =>
        AnalyticsSettings.Load(parse.GetValue(GlobalOptions.Data), parse.GetValue(GlobalOptions.Config));

    /// <summary>
    /// Runs <paramref name="body"/> against the store. Inside the server: its open store. Otherwise the
    /// configured store is opened here; when a running server owns the embedded data directory, the
    /// whole command is sent to that server's admin socket and its output is relayed.
    /// </summary>
    public Task<int> WithStoreAsync(ParseResult parse, Func<IClickHouseStore, Task<int>> body, CancellationToken cancellationToken) =>
        WithStoreAsync(parse, Forwarding.AsTyped, body, cancellationToken);

    /// <inheritdoc cref="WithStoreAsync(ParseResult, Func{IClickHouseStore, Task{int}}, CancellationToken)"/>
    /// <param name="forwarding">What to send instead of the command line and stdin as typed, when the command is forwarded.</param>
    public async Task<int> WithStoreAsync(ParseResult parse, Forwarding forwarding, Func<IClickHouseStore, Task<int>> body, CancellationToken cancellationToken)
    {
        if (Server is not null)
        {
            return await body(Server.Store);
        }

        var settings = Settings(parse);
        IClickHouseStore store;
        try
        {
            store = await StoreFactory.OpenAndMigrateAsync(settings.Store, settings.DataDirectory, NullLogger.Instance, cancellationToken);
        }
        catch (DataDirectoryInUseException)
        {
            return await AdminClient.ForwardAsync(settings.DataDirectory, forwarding.Args ?? RawArgs(parse), IO, forwarding.Stdin, cancellationToken);
        }
        catch (StoreUnavailableException ex)
        {
            throw new CliException(ex.Message, 2);
        }
        catch (ClickHouseException ex)
        {
            throw new CliException("The store's schema could not be brought up to date: " + ex.Message, 2);
        }

        await using (store)
        {
            return await body(store);
        }
    }

    public static string[] RawArgs(ParseResult parse) => parse.Tokens.Select(t => t.Value).ToArray();
}

/// <summary>Configuration as every verb sees it: appsettings.json, --config FILE, ANALYTICS_* environment, command line.</summary>
internal sealed class AnalyticsSettings
{
    private AnalyticsSettings(IConfiguration configuration, string dataDirectory)
    {
        Configuration = configuration;
        DataDirectory = dataDirectory;
        Store = configuration.GetSection("Store").Get<StoreOptions>() ?? new StoreOptions();
    }

    public IConfiguration Configuration { get; }

    public string DataDirectory { get; }

    public StoreOptions Store { get; }

    public static AnalyticsSettings Load(string? dataOption, string? configFile, IEnumerable<KeyValuePair<string, string?>>? overrides = null)
    {
        var builder = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true);
        if (!string.IsNullOrWhiteSpace(configFile))
        {
            if (!File.Exists(configFile))
            {
                throw new CliException($"Configuration file {configFile} does not exist.", 2);
            }

            builder.AddJsonFile(Path.GetFullPath(configFile), optional: false);
        }

        builder.AddEnvironmentVariables("ANALYTICS_");
        if (overrides is not null)
        {
            builder.AddInMemoryCollection(overrides);
        }

        IConfiguration configuration;
        try
        {
            configuration = builder.Build();
        }
        catch (InvalidDataException ex)
        {
            throw new CliException($"Configuration is not valid JSON: {ex.InnerException?.Message ?? ex.Message}", 2);
        }

        var data = dataOption ?? configuration["DATA"] ?? configuration["DataDirectory"] ?? "data";
        return new AnalyticsSettings(configuration, Path.GetFullPath(data));
    }
}
