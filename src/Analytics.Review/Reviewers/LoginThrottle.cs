using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Analytics.Review.Reviewers;

/// <summary>
/// Counts login attempts per client IP and per reviewer name in a sliding window; once either is at
/// its budget, further attempts are refused (429) without checking the password, so guessing costs
/// the guesser time and the server nothing.
/// <para>
/// Check and count are one step (<see cref="TryBegin"/>): an attempt reserves its place in both windows
/// before the password is hashed, so a burst of concurrent guesses cannot all pass the check before the
/// first failure is recorded. A failed attempt keeps its place; a successful one gives its place back to
/// the IP, and clears the name's finished failures (attempts still in flight keep theirs).
/// </para>
/// <para>
/// Both maps are keyed by strings the client chooses, so they are bounded: windows that have expired
/// are swept (at least once per <see cref="ReviewOptions.LoginWindow"/>, and whenever a map is full),
/// and each map holds at most <see cref="ReviewOptions.LoginTrackedKeys"/> keys. When a map is full of
/// live windows, the least recently used windows that are not at their budget are dropped first; a
/// window at its budget (a name or address being refused) is never dropped to make room. If every
/// window is at its budget, attempts from new names or addresses are refused until windows expire.
/// In memory: a restart forgets, which is acceptable for a console behind loopback or a proxy.
/// </para>
/// </summary>
internal sealed partial class LoginThrottle
{
    private readonly Lock _gate = new();
    private readonly Windows _byIp;
    private readonly Windows _byName;
    private readonly ReviewOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private DateTime _lastSweep;
    private DateTime _lastSaturatedLog;

    public LoginThrottle(IOptions<ReviewOptions> options, TimeProvider time, ILogger<LoginThrottle> logger)
    {
        _options = options.Value;
        _time = time;
        _logger = logger;
        _byIp = new Windows(_options.LoginFailuresPerIp, _options.LoginTrackedKeys, _options.LoginWindow);
        _byName = new Windows(_options.LoginFailuresPerName, _options.LoginTrackedKeys, _options.LoginWindow);
        _lastSweep = time.GetUtcNow().UtcDateTime;
    }

    /// <summary>Names and addresses tracked now (both maps together).</summary>
    public int TrackedKeys
    {
        get
        {
            lock (_gate)
            {
                return _byIp.Count + _byName.Count;
            }
        }
    }

    /// <summary>
    /// Reserves an attempt for this client and name, or returns null and how long to wait. The caller
    /// must settle a reserved attempt with <see cref="Succeeded"/> or <see cref="Failed"/>; one never
    /// settled (the request died) counts as a failure until it leaves the window.
    /// </summary>
    public LoginAttempt? TryBegin(string ip, string name, out TimeSpan retryAfter)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var nameKey = ReviewerStore.Normalize(name);
        lock (_gate)
        {
            if (now - _lastSweep >= _options.LoginWindow)
            {
                _byIp.Sweep(now);
                _byName.Sweep(now);
                _lastSweep = now;
            }

            var byIp = _byIp.Wait(ip, now);
            var byName = _byName.Wait(nameKey, now);
            retryAfter = byIp > byName ? byIp : byName;
            if (retryAfter > TimeSpan.Zero)
            {
                return null;
            }

            if (!_byIp.MakeRoom(ip, now) || !_byName.MakeRoom(nameKey, now))
            {
                if (now - _lastSaturatedLog >= TimeSpan.FromMinutes(1))
                {
                    _lastSaturatedLog = now;
                    LogSaturated(_logger, _options.LoginTrackedKeys);
                }

                retryAfter = _options.LoginWindow;
                return null;
            }

            var attempt = new LoginAttempt(ip, nameKey, now);
            _byIp.Add(ip, attempt);
            _byName.Add(nameKey, attempt);
            return attempt;
        }
    }

    /// <summary>The password was wrong (or the name unknown): the attempt keeps its place in both windows.</summary>
    public void Failed(LoginAttempt attempt)
    {
        lock (_gate)
        {
            attempt.InFlight = false;
        }
    }

    /// <summary>The login succeeded: the IP gets this attempt back, and the name's finished failures are cleared.</summary>
    public void Succeeded(LoginAttempt attempt)
    {
        lock (_gate)
        {
            attempt.InFlight = false;
            _byIp.Remove(attempt.Ip, a => ReferenceEquals(a, attempt));
            _byName.Remove(attempt.Name, a => ReferenceEquals(a, attempt) || !a.InFlight);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Login throttle full: more than {Keys} names or addresses failed to log in within the window, each at its budget; logins from new names or addresses get 429 until windows expire")]
    private static partial void LogSaturated(ILogger logger, int keys);

    /// <summary>One map of windows (by IP or by name); guarded by the throttle's lock.</summary>
    private sealed class Windows(int budget, int capacity, TimeSpan window)
    {
        private readonly Dictionary<string, List<LoginAttempt>> _windows = new(StringComparer.Ordinal);

        public int Count => _windows.Count;

        public TimeSpan Wait(string key, DateTime now)
        {
            if (!_windows.TryGetValue(key, out var attempts))
            {
                return TimeSpan.Zero;
            }

            Trim(attempts, now);
            if (attempts.Count == 0)
            {
                _windows.Remove(key);
                return TimeSpan.Zero;
            }

            return attempts.Count < budget ? TimeSpan.Zero : attempts[0].At + window - now;
        }

        public void Add(string key, LoginAttempt attempt)
        {
            if (!_windows.TryGetValue(key, out var attempts))
            {
                _windows[key] = attempts = new List<LoginAttempt>(Math.Min(budget, 8));
            }

            attempts.Add(attempt);
        }

        public void Remove(string key, Predicate<LoginAttempt> match)
        {
            if (_windows.TryGetValue(key, out var attempts))
            {
                attempts.RemoveAll(match);
                if (attempts.Count == 0)
                {
                    _windows.Remove(key);
                }
            }
        }

        /// <summary>True when <paramref name="key"/> has, or can be given, a window.</summary>
        public bool MakeRoom(string key, DateTime now)
        {
            if (_windows.Count < capacity || _windows.ContainsKey(key))
            {
                return true;
            }

            Sweep(now);
            if (_windows.Count < capacity)
            {
                return true;
            }

            // Still full of live windows: drop the least recently used tenth of those not at their budget
            // and with nothing in flight (a refused name or address stays refused).
            var droppable = _windows.Where(w => w.Value.Count < budget && !w.Value.Exists(a => a.InFlight))
                .OrderBy(w => w.Value[^1].At)
                .Take(Math.Max(1, capacity / 10))
                .Select(w => w.Key)
                .ToList();
            foreach (var k in droppable)
            {
                _windows.Remove(k);
            }

            return _windows.Count < capacity;
        }

        public void Sweep(DateTime now)
        {
            List<string>? empty = null;
            foreach (var (key, attempts) in _windows)
            {
                Trim(attempts, now);
                if (attempts.Count == 0)
                {
                    (empty ??= []).Add(key);
                }
            }

            empty?.ForEach(k => _windows.Remove(k));
        }

        // Attempts are added in time order, so the expired ones are at the front.
        private void Trim(List<LoginAttempt> attempts, DateTime now)
        {
            var expired = 0;
            while (expired < attempts.Count && attempts[expired].At <= now - window)
            {
                expired++;
            }

            attempts.RemoveRange(0, expired);
        }
    }
}

/// <summary>A reserved login attempt (see <see cref="LoginThrottle.TryBegin"/>).</summary>
internal sealed class LoginAttempt(string ip, string name, DateTime at)
{
    public string Ip { get; } = ip;

    public string Name { get; } = name;

    public DateTime At { get; } = at;

    /// <summary>Not settled yet; guarded by the throttle's lock.</summary>
    public bool InFlight { get; set; } = true;
}
