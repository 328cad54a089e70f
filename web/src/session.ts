import { useEffect, useState } from "preact/hooks";

// Who is signed in on this browser: the session token the API returned once at
// login, and the user it belongs to. localStorage, so a reload keeps you signed in.
const TOKEN = "gofund.token";
const USER = "gofund.user";

export type SignedIn = { id: string; username: string; email: string; email_verified: boolean };

const listeners = new Set<() => void>();
const changed = () => listeners.forEach((listener) => listener());
// Another tab logging in or out changes this one too.
window.addEventListener("storage", (event) => {
  if (event.key === TOKEN || event.key === USER) changed();
});

export const session = {
  token: (): string | null => localStorage.getItem(TOKEN),
  user(): SignedIn | null {
    const raw = localStorage.getItem(USER);
    return raw ? (JSON.parse(raw) as SignedIn) : null;
  },
  set(token: string, user: SignedIn): void {
    localStorage.setItem(TOKEN, token);
    localStorage.setItem(USER, JSON.stringify(user));
    changed();
  },
  update(user: SignedIn): void {
    localStorage.setItem(USER, JSON.stringify(user));
    changed();
  },
  clear(): void {
    localStorage.removeItem(TOKEN);
    localStorage.removeItem(USER);
    changed();
  },
};

/** The signed-in user, re-rendering when it changes. */
export function useUser(): SignedIn | null {
  const [user, setUser] = useState(session.user());
  useEffect(() => {
    const listener = () => setUser(session.user());
    listeners.add(listener);
    return () => void listeners.delete(listener);
  }, []);
  return user;
}
