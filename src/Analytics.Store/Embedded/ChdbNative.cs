using System.Runtime.InteropServices;

namespace Analytics.Store.Embedded;

// The whole C surface of libchdb that the project uses. Connection handles are `chdb_connection*`
// (a pointer to the opaque connection), queries take the dereferenced `chdb_connection`.
internal static unsafe partial class ChdbNative
{
    internal const string Library = "chdb";

    [LibraryImport(Library, EntryPoint = "chdb_connect")]
    internal static partial nint Connect(int argc, nint* argv);

    [LibraryImport(Library, EntryPoint = "chdb_close_conn")]
    internal static partial void CloseConnection(nint connection);

    [LibraryImport(Library, EntryPoint = "chdb_query_n")]
    internal static partial nint QueryN(nint conn, byte* query, nuint queryLength, byte* format, nuint formatLength);

    [LibraryImport(Library, EntryPoint = "chdb_query_with_params_n")]
    internal static partial nint QueryWithParamsN(
        nint conn, byte* query, nuint queryLength, byte* format, nuint formatLength,
        byte** names, nuint* nameLengths, byte** values, nuint* valueLengths, nuint count);

    [LibraryImport(Library, EntryPoint = "chdb_result_buffer")]
    internal static partial byte* ResultBuffer(nint result);

    [LibraryImport(Library, EntryPoint = "chdb_result_length")]
    internal static partial nuint ResultLength(nint result);

    [LibraryImport(Library, EntryPoint = "chdb_result_rows_read")]
    internal static partial ulong ResultRowsRead(nint result);

    [LibraryImport(Library, EntryPoint = "chdb_result_elapsed")]
    internal static partial double ResultElapsed(nint result);

    [LibraryImport(Library, EntryPoint = "chdb_result_error")]
    internal static partial byte* ResultError(nint result);

    [LibraryImport(Library, EntryPoint = "chdb_destroy_query_result")]
    internal static partial void DestroyResult(nint result);
}

// libc's sigaction, used to save .NET's signal handlers before chdb_connect and put them back
// after it: ClickHouse installs its own, and with them a NullReferenceException (which the runtime
// raises from SIGSEGV) hangs or kills the process. chdb_set_signal_handlers_enabled(0) and
// chdb_reset_signal_handlers() were measured not to help; restoring every handler did.
internal static unsafe partial class LibC
{
    // glibc x86_64/arm64 struct sigaction is 152 bytes; a larger buffer costs nothing.
    internal const int SigactionSize = 256;
    internal const int MaxSignal = 64;

    [LibraryImport("libc", EntryPoint = "sigaction", SetLastError = true)]
    internal static partial int Sigaction(int signal, byte* action, byte* oldAction);

    internal static byte[][] SaveSignalHandlers()
    {
        var saved = new byte[MaxSignal + 1][];
        for (var sig = 1; sig <= MaxSignal; sig++)
        {
            var buffer = new byte[SigactionSize];
            fixed (byte* p = buffer)
            {
                if (Sigaction(sig, null, p) == 0)
                {
                    saved[sig] = buffer;
                }
            }
        }

        return saved;
    }

    internal static void RestoreSignalHandlers(byte[][] saved)
    {
        for (var sig = 1; sig <= MaxSignal; sig++)
        {
            if (saved[sig] is not { } buffer)
            {
                continue;
            }

            fixed (byte* p = buffer)
            {
                _ = Sigaction(sig, p, null);
            }
        }
    }
}
