/**
 * nbwork's JupyterLab extension: the Work panel in the left sidebar, a details tab per
 * work, and toasts when work started in this page session ends.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { EVENT_SCHEMA_ID } from './api';
import { DetailsWidget } from './details';
import { WorkPanel } from './panel';

const PLUGIN_ID = 'nbwork-labextension:plugin';

// A static drawing (no user data): a gear behind a clock hand.
const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<g class="jp-icon3" fill="#616161"><path d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 ' +
  '2a8 8 0 1 1 0 16 8 8 0 0 1 0-16zm-1 3v6l5 3 1-1.6-4-2.4V7z"/></g></svg>';

const nbworkIcon = new LabIcon({ name: 'nbwork:panel', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The nbwork Work panel: background work of nbwork stores, live.',
  autoStart: true,
  optional: [ILayoutRestorer, INotebookTracker, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    let notifications = true;
    const details = new Map<string, MainAreaWidget<DetailsWidget>>();

    const insertCode = (code: string): void => {
      const notebook = notebooks?.currentWidget;
      if (!notebook) {
        Notification.warning(
          'nbwork: open a notebook first; "Insert code" adds a cell to it',
          { autoClose: 5000 }
        );
        return;
      }
      NotebookActions.insertBelow(notebook.content);
      const cell = notebook.content.activeCell;
      cell?.model.sharedModel.setSource(code);
      app.shell.activateById(notebook.id);
    };

    const openDetails = (id: string, store: string): void => {
      const key = `${store}\n${id}`;
      let widget = details.get(key);
      if (!widget || widget.isDisposed) {
        const content = new DetailsWidget({
          id,
          store,
          openDetails,
          insertCode
        });
        widget = new MainAreaWidget({ content });
        widget.id = `nbwork-details-${id}`;
        widget.title.icon = nbworkIcon;
        widget.title.closable = true;
        details.set(key, widget);
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
    };

    const panel = new WorkPanel({
      openDetails,
      notificationsEnabled: () => notifications
    });
    panel.title.icon = nbworkIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'nbwork-panel');

    app.serviceManager.events.stream.connect((_, event) => {
      if (event.schema_id !== EVENT_SCHEMA_ID) {
        return;
      }
      const store = typeof event.store === 'string' ? event.store : null;
      panel.pushed(store);
    });

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const update = () => {
          notifications = settings.get('notifications').composite !== false;
        };
        update();
        settings.changed.connect(update);
      });
    }

    app.commands.addCommand('nbwork:open-panel', {
      label: 'Show the nbwork Work panel',
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand('nbwork:open-details', {
      label: 'Show the details of an nbwork work',
      execute: args =>
        openDetails(String(args.id ?? ''), String(args.store ?? ''))
    });
  }
};

export default plugin;
