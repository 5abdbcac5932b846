using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Analytics.Store.Embedded;

/// <summary>
/// ClickHouse in-process through chDB, with MergeTree data in a directory. One process owns a data
/// directory (an exclusive lock file guards it) and chDB allows one open connection per process, so
/// this is opened once per process and shared. Calls are serialised on the one connection, and writes
/// (inserts, statements) go ahead of waiting reads: a queue of heavy console queries cannot hold the
/// event sink's inserts back by more than the one query running (which callers bound with
/// max_execution_time; chDB cannot cancel a query from outside).
/// </summary>
public sealed class EmbeddedStore : IClickHouseStore
{
    private const string LockFileName = "analytics.lock";
    private const string PidFileName = "analytics.pid";
    private static readonly Lock OpenGate = new();
    private static EmbeddedStore? _open;

    private readonly SemaphoreSlim _gate = new(1, 1);
    private int _writesWaiting;
    private readonly string _tempDirectory;
    private long _insertSequence;
    private readonly FileStream _lock;
    private nint _connectionHandle; // chdb_connection*, owned by this instance
    private nint _connection;       // *chdb_connection, what queries take

    private unsafe EmbeddedStore(string dataDirectory, FileStream lockFile, nint handle)
    {
        Location = dataDirectory;
        _lock = lockFile;
        _connectionHandle = handle;
        _connection = *(nint*)handle;
        _tempDirectory = Path.Combine(dataDirectory, "tmp");
        Directory.CreateDirectory(_tempDirectory);
    }

    public string Backend => "embedded";

    public string Location { get; }

    /// <summary>Opens (creating when needed) the embedded store in <paramref name="dataDirectory"/>.</summary>
    /// <exception cref="DataDirectoryInUseException">Another process (or this one) already has it open.</exception>
    /// <exception cref="StoreUnavailableException">The engine is missing or the directory is unusable.</exception>
    public static EmbeddedStore Open(string dataDirectory)
    {
        var fullPath = Path.GetFullPath(dataDirectory);
        lock (OpenGate)
        {
            if (_open is not null)
            {
                throw new DataDirectoryInUseException(
                    $"This process already has an embedded store open at {_open.Location}; chDB allows one per process.", _open.Location);
            }

            var storeDir = Path.Combine(fullPath, "clickhouse");
            try
            {
                Directory.CreateDirectory(storeDir);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new StoreUnavailableException($"Cannot create the data directory {storeDir}: {ex.Message}", ex);
            }

            var lockFile = AcquireLock(fullPath);
            try
            {
                ChdbLibrary.EnsureResolver();
                var handle = Connect(storeDir);
                var store = new EmbeddedStore(fullPath, lockFile, handle);

                // Text renderings of DateTime follow the session time zone; ours is UTC whatever the host's.
                store.Run("SET session_timezone = 'UTC'"u8.ToArray(), "TSV", null);

                // chDB 26.5's dynamic top-K filter fails some `ORDER BY score DESC LIMIT n` reads of a
                // Float32 column with "Type mismatch in IN or VALUES section. Expected: Float32. Got:
                // Decimal64" (seen on the review queue over scored verdicts); the plain sort is correct.
                store.Run("SET use_top_k_dynamic_filtering = 0"u8.ToArray(), "TSV", null);
                _open = store;
                return store;
            }
            catch
            {
                lockFile.Dispose();
                throw;
            }
        }
    }

    private static FileStream AcquireLock(string dataDirectory)
    {
        var lockPath = Path.Combine(dataDirectory, LockFileName);
        var pidPath = Path.Combine(dataDirectory, PidFileName);
        try
        {
            // FileShare.None takes an exclusive flock() on Unix: a second process (or a second open in
            // this one) fails here, before the engine ever touches the directory.
            var stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            File.WriteAllText(pidPath, Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            return stream;
        }
        catch (IOException ex)
        {
            var owner = File.Exists(pidPath) ? File.ReadAllText(pidPath).Trim() : "unknown";
            throw new DataDirectoryInUseException(
                $"The data directory {dataDirectory} is in use by another process (pid {owner}). " +
                "Stop it, or run the command against the running server (CLI verbs do this by themselves).",
                dataDirectory, ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new StoreUnavailableException($"Cannot lock the data directory {dataDirectory}: {ex.Message}", ex);
        }
    }

    private static unsafe nint Connect(string storeDir)
    {
        string[] args = ["clickhouse", "--path=" + storeDir];
        var native = args.Select(a => Marshal.StringToCoTaskMemUTF8(a)).ToArray();
        try
        {
            var saved = LibC.SaveSignalHandlers();
            nint handle;
            fixed (nint* argv = native)
            {
                handle = ChdbNative.Connect(args.Length, argv);
            }

            LibC.RestoreSignalHandlers(saved);
            if (handle == 0 || *(nint*)handle == 0)
            {
                throw new StoreUnavailableException($"chDB could not open a connection on {storeDir} (see its log output above).");
            }

            return handle;
        }
        catch (DllNotFoundException ex)
        {
            throw new StoreUnavailableException($"Cannot load libchdb from {ChdbLibrary.ExpectedPath}: {ex.Message}", ex);
        }
        finally
        {
            foreach (var p in native)
            {
                Marshal.FreeCoTaskMem(p);
            }
        }
    }

    public Task ExecuteAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default) =>
        RunAsync(Encoding.UTF8.GetBytes(sql), "TSV", parameters, cancellationToken, write: true);

    public async Task<QueryResult> QueryAsync(string sql, QueryParameters? parameters = null, CancellationToken cancellationToken = default)
    {
        var bytes = await RunAsync(Encoding.UTF8.GetBytes(sql), "TabSeparatedWithNamesAndTypes", parameters, cancellationToken);
        return QueryResult.FromTsvWithNamesAndTypes(bytes);
    }

    public Task<byte[]> QueryFormattedAsync(string sql, string format, QueryParameters? parameters = null, CancellationToken cancellationToken = default) =>
        RunAsync(Encoding.UTF8.GetBytes(sql), format, parameters, cancellationToken);

    public async Task InsertAsync(string table, string? columns, InsertFormat format, ReadOnlyMemory<byte> data, string? deduplicationToken, CancellationToken cancellationToken = default)
    {
        // Inline data after FORMAT is cut at the first blank line ("\n\n"), which binary rows contain
        // by chance; FROM INFILE reads the exact bytes. The file lives in page cache for milliseconds.
        var path = Path.Combine(_tempDirectory, "insert-" + Interlocked.Increment(ref _insertSequence).ToString(CultureInfo.InvariantCulture) + ".rb");
        await using (var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16, FileOptions.Asynchronous))
        {
            await file.WriteAsync(data, cancellationToken);
        }

        try
        {
            var sql = InsertStatements.FromFile(table, columns, format, path, deduplicationToken);
            await RunAsync(Encoding.UTF8.GetBytes(sql), "TSV", null, cancellationToken, write: true);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private async Task<byte[]> RunAsync(byte[] query, string format, QueryParameters? parameters, CancellationToken cancellationToken, bool write = false)
    {
        await EnterAsync(write, cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_connection == 0, this);

            // The engine call is synchronous and may run for a while: keep it off the caller's thread.
            return await Task.Run(() => Run(query, format, parameters), CancellationToken.None);
        }
        finally
        {
            _gate.Release();
        }
    }

    // One call at a time; a read that gets the connection while a write waits hands it over and queues again.
    private async Task EnterAsync(bool write, CancellationToken cancellationToken)
    {
        if (write)
        {
            Interlocked.Increment(ref _writesWaiting);
            try
            {
                await _gate.WaitAsync(cancellationToken);
            }
            finally
            {
                Interlocked.Decrement(ref _writesWaiting);
            }

            return;
        }

        while (true)
        {
            await _gate.WaitAsync(cancellationToken);
            if (Volatile.Read(ref _writesWaiting) == 0)
            {
                return;
            }

            _gate.Release();
            await Task.Delay(1, cancellationToken);
        }
    }

    private unsafe byte[] Run(byte[] query, string format, QueryParameters? parameters)
    {
        var formatBytes = Encoding.ASCII.GetBytes(format);
        nint result;
        fixed (byte* q = query)
        fixed (byte* f = formatBytes)
        {
            if (parameters is null || parameters.Count == 0)
            {
                result = ChdbNative.QueryN(_connection, q, (nuint)query.Length, f, (nuint)formatBytes.Length);
            }
            else
            {
                result = QueryWithParameters(q, query.Length, f, formatBytes.Length, parameters);
            }
        }

        if (result == 0)
        {
            throw new ClickHouseException(0, "", "chDB returned no result (the connection may be closed).");
        }

        try
        {
            var error = ChdbNative.ResultError(result);
            if (error != null)
            {
                throw ClickHouseException.FromMessage(Marshal.PtrToStringUTF8((nint)error) ?? "unknown error");
            }

            var length = (int)ChdbNative.ResultLength(result);
            var buffer = ChdbNative.ResultBuffer(result);
            return length == 0 || buffer == null ? [] : new ReadOnlySpan<byte>(buffer, length).ToArray();
        }
        finally
        {
            ChdbNative.DestroyResult(result);
        }
    }

    private unsafe nint QueryWithParameters(byte* query, int queryLength, byte* format, int formatLength, QueryParameters parameters)
    {
        // Heap arrays, pinned for the call: a statement may carry thousands of parameters, and a stack
        // buffer sized by them would overflow the stack (which no handler can catch).
        var count = parameters.Count;
        var names = parameters.Keys.Select(k => Encoding.UTF8.GetBytes(k)).ToArray();
        var values = parameters.Values.Select(v => Encoding.UTF8.GetBytes(QueryParameters.Format(v))).ToArray();
        var namePtrs = new nint[count];
        var valuePtrs = new nint[count];
        var nameLens = new nuint[count];
        var valueLens = new nuint[count];
        var handles = new List<GCHandle>(count * 2);
        try
        {
            for (var i = 0; i < count; i++)
            {
                var hn = GCHandle.Alloc(names[i], GCHandleType.Pinned);
                handles.Add(hn);
                var hv = GCHandle.Alloc(values[i], GCHandleType.Pinned);
                handles.Add(hv);
                namePtrs[i] = hn.AddrOfPinnedObject();
                valuePtrs[i] = hv.AddrOfPinnedObject();
                nameLens[i] = (nuint)names[i].Length;
                valueLens[i] = (nuint)values[i].Length;
            }

            fixed (nint* np = namePtrs)
            fixed (nint* vp = valuePtrs)
            fixed (nuint* nl = nameLens)
            fixed (nuint* vl = valueLens)
            {
                return ChdbNative.QueryWithParamsN(_connection, query, (nuint)queryLength, format, (nuint)formatLength,
                    (byte**)np, nl, (byte**)vp, vl, (nuint)count);
            }
        }
        finally
        {
            foreach (var h in handles)
            {
                h.Free();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _gate.WaitAsync();
        try
        {
            if (_connectionHandle != 0)
            {
                ChdbNative.CloseConnection(_connectionHandle);
                _connectionHandle = 0;
                _connection = 0;
            }

            await _lock.DisposeAsync();
        }
        finally
        {
            _gate.Release();
        }

        lock (OpenGate)
        {
            if (ReferenceEquals(_open, this))
            {
                _open = null;
            }
        }
    }
}

/// <summary>The data directory is already owned by another process (or another store in this one).</summary>
public sealed class DataDirectoryInUseException : Exception
{
    public DataDirectoryInUseException()
    {
        DataDirectory = "";
    }

    public DataDirectoryInUseException(string message) : base(message)
    {
        DataDirectory = "";
    }

    public DataDirectoryInUseException(string message, Exception? innerException) : base(message, innerException)
    {
        DataDirectory = "";
    }

    public DataDirectoryInUseException(string message, string dataDirectory, Exception? innerException = null)
        : base(message, innerException)
    {
        DataDirectory = dataDirectory;
    }

    public string DataDirectory { get; }
}
