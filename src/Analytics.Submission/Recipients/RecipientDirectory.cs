using System.Collections.Frozen;
using Analytics.Submission.Rules;
using Microsoft.Extensions.Logging;

namespace Analytics.Submission;

/// <summary>
/// The listener's in-memory view of <see cref="RecipientStore"/>: immutable sets swapped atomically,
/// read without locks on every RCPT. Reloaded periodically and after a change in the same process.
/// </summary>
public sealed partial class RecipientDirectory : IRecipientLookup
{
    private sealed record Snapshot(FrozenSet<string> Domains, FrozenSet<string> Mailboxes);

    private readonly RecipientStore _store;
    private readonly ILogger _logger;
    private Snapshot _snapshot = new(FrozenSet<string>.Empty, FrozenSet<string>.Empty);

    public RecipientDirectory(RecipientStore store, ILogger<RecipientDirectory> logger)
    {
        _store = store;
        _logger = logger;
        _store.Changed += (_, _) => _ = RefreshQuietlyAsync();
    }

    public int DomainCount => Volatile.Read(ref _snapshot).Domains.Count;

    public int MailboxCount => Volatile.Read(ref _snapshot).Mailboxes.Count;

    public async Task RefreshAsync(CancellationToken cancellationToken = default)
    {
        var (domains, mailboxes) = await _store.LoadAsync(cancellationToken);
        Volatile.Write(ref _snapshot, new Snapshot(domains.ToFrozenSet(StringComparer.Ordinal), mailboxes.ToFrozenSet(StringComparer.Ordinal)));
    }

    internal async Task RefreshQuietlyAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await RefreshAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            LogRefreshFailed(_logger, ex);
        }
    }

    /// <summary>True when this server is authoritative for <paramref name="domain"/> (already lower-case ASCII).</summary>
    public bool IsLocalDomain(string domain) => Volatile.Read(ref _snapshot).Domains.Contains(domain);

    /// <summary>True when <paramref name="address"/> (normalized) is a known mailbox.</summary>
    public bool HasMailbox(string address) => Volatile.Read(ref _snapshot).Mailboxes.Contains(address);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not reload the recipient directory; keeping the previous snapshot")]
    private static partial void LogRefreshFailed(ILogger logger, Exception exception);
}
