using System.IO.Compression;
using ClickHouse.Driver;
using ClickHouse.Driver.ADO;
using ClickHouse.Driver.ADO.Parameters;

namespace Analytics.Store.Server;

/// <summary>
/// A ClickHouse server or cluster through ClickHouse.Driver over HTTP. Reads ask ClickHouse for its own
/// text formats and decode them with the embedded backend's decoder, so both backends return the same
/// values for the same query; inserts post already-encoded RowBinary as the request body.
/// </summary>
public sealed class ServerStore : IClickHouseStore
{
    // How long Open waits for the first answer: a black-holed address would otherwise hold start-up for
    // the driver's whole request timeout.
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(10);

    private readonly ClickHouseClient _client; // owns the HTTP connection pool
    private readonly ClickHouseConnection _connection; // a view on _client for parameterised raw queries; owns nothing
    private int _disposed;

    private ServerStore(ServerEndpoint endpoint)
    {
        Location = endpoint.Location;
        _client = new ClickHouseClient(new ClickHouseClientSettings(endpoint.Settings)
        {
            ParameterFormatter = ParameterText.Instance,
            ParameterTypeResolver = ParameterText.Instance,
        });
        _connection = _client.CreateConnection();
    }

    public string Backend => "server";

    public string Location { get; }

    /// <summary>Connects to <paramref name="server"/> and checks that it answers.</summary>
    /// <remarks>
    /// Synchronous because <see cref="StoreFactory.Open"/> is; it runs once at start-up. The check runs
    /// on the thread pool so a caller's synchronisation context cannot deadlock it. Async callers use
    /// <see cref="OpenAsync"/>.
    /// </remarks>
    /// <exception cref="ArgumentException">The setting is neither a connection string nor an http(s) URL.</exception>
    /// <exception cref="StoreUnavailableException">The server cannot be reached or refuses the login.</exception>
    public static ServerStore Open(string server)
    {
        var endpoint = ServerEndpoint.Parse(server);
        return Task.Run(() => ConnectAsync(endpoint, CancellationToken.None)).GetAwaiter().GetResult();
    }

    /// <inheritdoc cref="Open"/>
    public static Task<ServerStore> OpenAsync(string server, CancellationToken cancellationToken = default) =>
        ConnectAsync(ServerEndpoint.Parse(server), cancellationToken);

    private static async Task<ServerStore> ConnectAsync(ServerEndpoint endpoint, CancellationToken cancellationToken)
    {
        var store = new ServerStore(endpoint);
        using var probe = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        probe.CancelAfter(ProbeTimeout);
        try
        {
            await store.ExecuteAsync("SELECT 1", null, probe.Token);
            return store;
        }
        catch (Exception ex)
        {
            await store.DisposeAsync();
            var unavailable = ex switch
            {
                OperationCanceledException when !cancellationToken.IsCancellationRequested => new StoreUnavailableException(
                    $"ClickHouse at {endpoint.Location} did not answer within {ProbeTimeout.TotalSeconds:0} s.", ex),

                // A refused login or a missing database: the store is as unusable as with the server down.
                ClickHouseException ch => new StoreUnavailableException(
                    $"ClickHouse at {endpoint.Location} refused the connection check: {ch.Message}", ex),
                _ => null,
            };

            if (unavailable is null)
            {
                throw;
            }

            throw unavailable;
        }
    }

    public Task ExecuteAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default) =>
        RunAsync(sql, parameters, format: null, isoDateTimes: false, cancellationToken);

    public async Task<QueryResult> QueryAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        // The same format and decoder as the embedded backend, with one difference: DateTime values are
        // asked for as ISO 8601 in UTC. The decoder reads them as UTC, and a server's own time zone is
        // rarely UTC, so the plain format would shift every instant by the server's offset.
        var bytes = await RunAsync(sql, parameters, "TabSeparatedWithNamesAndTypes", isoDateTimes: true, cancellationToken);
        return QueryResult.FromTsvWithNamesAndTypes(bytes);
    }

    public Task<byte[]> QueryFormattedAsync(string sql, string format, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(format);
        return RunAsync(sql, parameters, format, isoDateTimes: false, cancellationToken);
    }

    public async Task InsertAsync(string table, string? columns, InsertFormat format, ReadOnlyMemory<byte> data, string? deduplicationToken, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);

        // The statement travels in the URL and ClickHouse reads the body as its data, so the rows are
        // streamed as they are, with no SQL text around them.
        var header = InsertStatements.Header(table, columns, format, deduplicationToken);
        var compress = _client.Settings.UseCompression;
        try
        {
            using var response = await _client.PostStreamAsync(
                header,
                async (body, ct) =>
                {
                    if (compress)
                    {
                        await using var gzip = new GZipStream(body, CompressionLevel.Fastest, leaveOpen: true);
                        await gzip.WriteAsync(data, ct);
                    }
                    else
                    {
                        await body.WriteAsync(data, ct);
                    }
                },
                compress,
                cancellationToken);
        }
        catch (Exception ex) when (Translate(ex, cancellationToken) is { } translated)
        {
            throw translated;
        }
    }

    private async Task<byte[]> RunAsync(string sql, QueryParameters? parameters, string? format, bool isoDateTimes, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ArgumentException.ThrowIfNullOrWhiteSpace(sql);

        using var command = _connection.CreateCommand(sql);

        // Buffer the whole answer on the server before the first byte is sent: an error then arrives as
        // an HTTP error with ClickHouse's code, instead of as text appended to a 200 response that would
        // be decoded as rows. Exceptions are plain text whatever the output format, so their code and
        // name can be read back.
        command.CustomSettings["wait_end_of_query"] = 1;
        command.CustomSettings["http_write_exception_in_output_format"] = 0;
        if (format is not null)
        {
            // default_format rather than a FORMAT clause appended to the SQL, which a trailing comment or
            // semicolon would break; a FORMAT clause in the SQL itself still wins, as with chDB.
            command.CustomSettings["default_format"] = format;
        }

        if (isoDateTimes)
        {
            command.CustomSettings["date_time_output_format"] = "iso";
        }

        if (parameters is not null)
        {
            foreach (var (name, value) in parameters)
            {
                command.Parameters.Add(new ClickHouseDbParameter { ParameterName = name, Value = value });
            }
        }

        try
        {
            using var result = await command.ExecuteRawResultAsync(cancellationToken);
            if (format is null)
            {
                return [];
            }

            // The decompressed stream belongs to the result; disposing the result releases it.
            var body = await result.ReadDecompressedStreamAsync();
            using var buffer = new MemoryStream();
            await body.CopyToAsync(buffer, cancellationToken);
            return buffer.ToArray();
        }
        catch (Exception ex) when (Translate(ex, cancellationToken) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>
    /// The store's exception for a driver or transport failure: the server's own errors keep their code
    /// and name; failures to reach it say the store is unavailable. Null leaves the exception as it is
    /// (the caller's cancellation, argument errors).
    /// </summary>
    private Exception? Translate(Exception ex, CancellationToken cancellationToken) => ex switch
    {
        ClickHouseServerException server => ServerError(server),
        HttpRequestException or IOException => new StoreUnavailableException($"Cannot reach ClickHouse at {Location}: {ex.Message}", ex),

        // A cancellation nobody asked for is the HTTP client's request timeout.
        OperationCanceledException when !cancellationToken.IsCancellationRequested =>
            new StoreUnavailableException($"ClickHouse at {Location} did not answer within the request timeout ({_client.Settings.Timeout}).", ex),
        _ => null,
    };

    private static ClickHouseException ServerError(ClickHouseServerException ex)
    {
        var message = ex.Message.Trim();
        var parsed = ClickHouseException.FromMessage(message);

        // An error without ClickHouse's text (a proxy's empty 5xx) may still carry the code the driver
        // read from the X-ClickHouse-Exception-Code header.
        return parsed.Code == 0 && ex.ErrorCode > 0
            ? new ClickHouseException(ex.ErrorCode, parsed.ErrorName, message)
            : new ClickHouseException(message, ex);
    }

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            ((IDisposable)_connection).Dispose();
            _client.Dispose();
        }

        return ValueTask.CompletedTask;
    }
}
