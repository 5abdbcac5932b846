using System.Collections.Concurrent;
using Microsoft.Extensions.Options;

namespace Analytics.Review.Reviewers;

/// <summary>
/// Counts failed logins per client IP and per reviewer name in a sliding window; once either is over
/// its budget, further attempts are refused (429) without checking the password, so guessing costs
/// the guesser time and the server nothing. A success clears the name's count, not the IP's.
/// In memory: a restart forgets, which is acceptable for a loopback console.
/// </summary>
internal sealed class LoginThrottle
{
    private readonly ConcurrentDictionary<string, Queue<DateTime>> _failures = new(StringComparer.Ordinal);
    private readonly ReviewOptions _options;
    private readonly TimeProvider _time;

    public LoginThrottle(IOptions<ReviewOptions> options, TimeProvider time)
    {
        _options = options.Value;
        _time = time;
    }

    /// <summary>Zero when an attempt may go ahead, else how long until it may.</summary>
    public TimeSpan RetryAfter(string ip, string name)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var wait = Wait("ip:" + ip, _options.LoginFailuresPerIp, now);
        var byName = Wait("name:" + ReviewerStore.Normalize(name), _options.LoginFailuresPerName, now);
        return wait > byName ? wait : byName;
    }

    public void Failed(string ip, string name)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        Add("ip:" + ip, now);
        Add("name:" + ReviewerStore.Normalize(name), now);
    }

    public void Succeeded(string name) => _failures.TryRemove("name:" + ReviewerStore.Normalize(name), out _);

    private void Add(string key, DateTime now)
    {
        var queue = _failures.GetOrAdd(key, _ => new Queue<DateTime>());
        lock (queue)
        {
            Trim(queue, now);
            queue.Enqueue(now);
        }
    }

    private TimeSpan Wait(string key, int budget, DateTime now)
    {
        if (!_failures.TryGetValue(key, out var queue))
        {
            return TimeSpan.Zero;
        }

        lock (queue)
        {
            Trim(queue, now);
            return queue.Count < budget ? TimeSpan.Zero : queue.Peek() + _options.LoginWindow - now;
        }
    }

    private void Trim(Queue<DateTime> queue, DateTime now)
    {
        while (queue.Count > 0 && queue.Peek() <= now - _options.LoginWindow)
        {
            queue.Dequeue();
        }
    }
}
