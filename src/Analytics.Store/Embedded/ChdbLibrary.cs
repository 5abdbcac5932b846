using System.Reflection;
using System.Runtime.InteropServices;

namespace Analytics.Store.Embedded;

/// <summary>Finds libchdb.so: <c>ANALYTICS_CHDB_LIB</c>, else the pinned version in the build cache.</summary>
public static class ChdbLibrary
{
    private static int _registered;

    public static string Version { get; } =
        typeof(ChdbLibrary).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "ChdbVersion")?.Value ?? "unknown";

    /// <summary>Where the library is expected; the file may not exist.</summary>
    public static string ExpectedPath
    {
        get
        {
            var explicitPath = Environment.GetEnvironmentVariable("ANALYTICS_CHDB_LIB");
            if (!string.IsNullOrWhiteSpace(explicitPath))
            {
                return explicitPath;
            }

            var root = Environment.GetEnvironmentVariable("ANALYTICS_CHDB_HOME");
            if (string.IsNullOrWhiteSpace(root))
            {
                var cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
                if (string.IsNullOrWhiteSpace(cache))
                {
                    cache = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
                }

                root = Path.Combine(cache, "analytics", "chdb");
            }

            return Path.Combine(root, Version, "libchdb.so");
        }
    }

    internal static void EnsureResolver()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 1)
        {
            return;
        }

        NativeLibrary.SetDllImportResolver(typeof(ChdbLibrary).Assembly, static (name, _, _) =>
        {
            if (name != ChdbNative.Library)
            {
                return 0;
            }

            var path = ExpectedPath;
            if (!File.Exists(path))
            {
                throw new StoreUnavailableException(
                    $"The embedded ClickHouse engine (libchdb {Version}) is not at {path}. " +
                    "Run build/fetch-chdb.sh (the build does it for you) or set ANALYTICS_CHDB_LIB to its path.");
            }

            return NativeLibrary.Load(path);
        });
    }
}
