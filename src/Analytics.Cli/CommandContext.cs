using System.CommandLine;
using Analytics.Cli.Admin;
using Analytics.Store;
using Analytics.Store.Embedded;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Memory;
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

    public static AnalyticsSettings Settings(ParseResult parse) =>
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

/// <summary>
/// Configuration as every verb sees it: appsettings.json, --config FILE, ANALYTICS_* environment,
/// command line. Keys of earlier releases are read under their new names (<see cref="Renamed"/>):
/// a key given under its new name wins, and <c>config check</c> names each renamed key it finds.
/// </summary>
internal sealed class AnalyticsSettings
{
    private AnalyticsSettings(IConfiguration configuration, string dataDirectory, bool dataGiven, IReadOnlyList<(string Old, string New)> renamed)
    {
        Configuration = configuration;
        DataDirectory = dataDirectory;
        DataGiven = dataGiven;
        Renamed = renamed;
        Store = configuration.GetSection("Store").Get<StoreOptions>() ?? new StoreOptions();
    }

    public IConfiguration Configuration { get; }

    public string DataDirectory { get; }

    /// <summary>--data was given on the command line: it wins over Submission:DataDirectory.</summary>
    public bool DataGiven { get; }

    /// <summary>Keys found under an earlier name, each with the name it is read as.</summary>
    public IReadOnlyList<(string Old, string New)> Renamed { get; }

    public StoreOptions Store { get; }

    /// <summary>Where the listener keeps its spool and keys: <c>Submission:DataDirectory</c>, unless --data was given or it is unset.</summary>
    public string SubmissionDataDirectory =>
        DataGiven || string.IsNullOrWhiteSpace(Configuration[$"{Submission.SubmissionOptions.SectionName}:{nameof(Submission.SubmissionOptions.DataDirectory)}"])
            ? DataDirectory
            : Path.GetFullPath(Configuration[$"{Submission.SubmissionOptions.SectionName}:{nameof(Submission.SubmissionOptions.DataDirectory)}"]!);

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

        IConfigurationRoot given;
        try
        {
            given = builder.Build();
        }
        catch (InvalidDataException ex)
        {
            throw new CliException($"Configuration is not valid JSON: {ex.InnerException?.Message ?? ex.Message}", 2);
        }

        var (configuration, renamed) = WithRenamedKeys(given);
        var data = dataOption ?? configuration["DATA"] ?? configuration["DataDirectory"] ?? "data";
        return new AnalyticsSettings(configuration, Path.GetFullPath(data), dataOption is not null, renamed);
    }

    /// <summary>
    /// Old keys copied under their new names in the layer that gave them, just above it: a new key in the
    /// same file wins, and an old key in the operator's file still beats the shipped appsettings.json
    /// defaults below it. The old names stay in place (nothing reads them any more).
    /// </summary>
    private static (IConfiguration Configuration, IReadOnlyList<(string Old, string New)> Renamed) WithRenamedKeys(IConfigurationRoot given)
    {
        var renamed = new List<(string Old, string New)>();
        var layers = new List<IConfigurationProvider>();
        foreach (var provider in given.Providers)
        {
            layers.Add(provider);
            var layer = new ConfigurationRoot([provider]);
            var moved = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
            foreach (var (key, value) in layer.AsEnumerable())
            {
                foreach (var (old, now) in Limits.LimitsOptions.RenamedSections)
                {
                    if (value is null || !(key.Equals(old, StringComparison.OrdinalIgnoreCase) || key.StartsWith(old + ":", StringComparison.OrdinalIgnoreCase)))
                    {
                        continue;
                    }

                    var target = now + key[old.Length..];
                    if (layer[target] is null)
                    {
                        moved[target] = value;
                    }

                    renamed.Add((key, target));
                }
            }

            if (moved.Count > 0)
            {
                layers.Add(new MemoryConfigurationProvider(new MemoryConfigurationSource { InitialData = moved }));
            }
        }

        return (layers.Count == given.Providers.Count() ? given : new ConfigurationRoot(layers), renamed);
    }
}
